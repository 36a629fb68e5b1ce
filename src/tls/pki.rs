//! A private CA and the gateway's certificate, for tools that cannot change
//! their base URL: `safedelete tls init` creates both, `tls renew` re-issues
//! the certificate from the same CA.
//!
//! The CA is name-constrained to the names it was created for, so its key,
//! if it ever leaked, could not vouch for any other site to the machines that
//! trust it. Keys are ECDSA P-256 and written 0600; certificates 0644.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

/// Where `tls init` writes unless told otherwise.
pub const DEFAULT_DIR: &str = "config/tls";
/// The name tools with a hard-coded base URL call.
pub const DEFAULT_NAME: &str = "server.smartlead.ai";
/// How long the CA is valid: the tools trust it, so it should outlive many
/// certificates.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long a server certificate is valid (the longest that every client
/// accepts for a certificate issued today).
const SERVER_VALIDITY: Duration = Duration::from_secs(397 * 86_400);
/// Certificates start an hour in the past, for clocks that run behind.
const BACKDATE: Duration = Duration::from_secs(3600);
/// The system trust stores a bundle is built from, the first that exists.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The files of one CA directory.
#[derive(Debug, Clone)]
pub struct TlsDir {
    pub dir: PathBuf,
}

impl TlsDir {
    pub fn new(dir: impl Into<PathBuf>) -> TlsDir {
        TlsDir { dir: dir.into() }
    }
    /// The CA certificate: what the tools trust (not secret).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// The CA's private key: only `tls renew` reads it.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }
    /// The gateway's certificate (`[listen_tls] cert_file`).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    /// The gateway's private key (`[listen_tls] key_file`).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
    /// The system's trusted CAs plus this one, for tools whose setting
    /// replaces the trust store instead of adding to it.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("ca-bundle.pem")
    }
}

/// What was issued.
#[derive(Debug)]
pub struct Issued {
    pub names: Vec<String>,
    pub not_after: SystemTime,
    /// The system trust store the bundle was built from, if one was found.
    pub system_bundle: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{} already holds a CA ({}); `safedelete tls renew --dir {}` re-issues the gateway's certificate from it, or give another --dir", .dir.display(), .existing.display(), .dir.display())]
    Exists { dir: PathBuf, existing: PathBuf },
    #[error("{} has no CA ({} is missing); create one with `safedelete tls init --dir {}`", .dir.display(), .missing.display(), .dir.display())]
    NoCa { dir: PathBuf, missing: PathBuf },
    #[error("--name {name:?} is not a DNS name (letters, digits, '-' and '.', as in server.smartlead.ai)")]
    BadName { name: String },
    #[error("the CA in {} only vouches for {allowed}; {name} is not one of them: create a CA for it with `safedelete tls init --dir OTHER_DIR --name {name}`", .dir.display())]
    OutsideCa {
        dir: PathBuf,
        name: String,
        allowed: String,
    },
    #[error("cannot read {}: {problem}", .path.display())]
    Unreadable { path: PathBuf, problem: String },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot issue the certificate: {0}")]
    Issue(#[from] rcgen::Error),
}

/// Creates a CA constrained to `names` and a certificate for them, in a new
/// (or empty of these files) directory.
pub fn init(dir: &TlsDir, names: &[String]) -> Result<Issued, PkiError> {
    check_names(names)?;
    for existing in [
        dir.ca_cert(),
        dir.ca_key(),
        dir.server_cert(),
        dir.server_key(),
    ] {
        if existing.exists() {
            return Err(PkiError::Exists {
                dir: dir.dir.clone(),
                existing,
            });
        }
    }
    create_dir(&dir.dir)?;
    let now = SystemTime::now();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("safedelete private CA for {}", names[0]),
    );
    ca.distinguished_name
        .push(DnType::OrganizationName, "safedelete");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.name_constraints = Some(NameConstraints {
        permitted_subtrees: names.iter().cloned().map(GeneralSubtree::DnsName).collect(),
        excluded_subtrees: Vec::new(),
    });
    ca.not_before = (now - BACKDATE).into();
    ca.not_after = (now + CA_VALIDITY).into();
    let ca_cert = ca.self_signed(&ca_key)?;
    write_file(&dir.ca_key(), ca_key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&dir.ca_cert(), ca_cert.pem().as_bytes(), 0o644)?;
    let issuer = Issuer::new(ca, ca_key);
    let (not_after, system_bundle) = issue(dir, &issuer, names, &ca_cert.pem())?;
    Ok(Issued {
        names: names.to_vec(),
        not_after,
        system_bundle,
    })
}

/// Re-issues the gateway's certificate from the CA in `dir`: for the same
/// names as the current one, or for `names` (which the CA must cover).
pub fn renew(dir: &TlsDir, names: Option<&[String]>) -> Result<Issued, PkiError> {
    let ca_pem = read(dir, &dir.ca_cert())?;
    let ca_key_pem = read(dir, &dir.ca_key())?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| PkiError::Unreadable {
        path: dir.ca_key(),
        problem: e.to_string(),
    })?;
    let ca_der = first_cert(&dir.ca_cert(), &ca_pem)?;
    let allowed =
        dns_names(&ca_der, Field::PermittedSubtrees).map_err(|problem| PkiError::Unreadable {
            path: dir.ca_cert(),
            problem,
        })?;
    let names = match names {
        Some(names) => names.to_vec(),
        None => {
            let current = read(dir, &dir.server_cert())?;
            let der = first_cert(&dir.server_cert(), &current)?;
            dns_names(&der, Field::SubjectAltNames).map_err(|problem| PkiError::Unreadable {
                path: dir.server_cert(),
                problem,
            })?
        }
    };
    check_names(&names)?;
    if let Some(name) = names.iter().find(|n| !allowed.contains(n)) {
        return Err(PkiError::OutsideCa {
            dir: dir.dir.clone(),
            name: name.clone(),
            allowed: allowed.join(", "),
        });
    }
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| PkiError::Unreadable {
        path: dir.ca_cert(),
        problem: e.to_string(),
    })?;
    let (not_after, system_bundle) = issue(dir, &issuer, &names, &ca_pem)?;
    Ok(Issued {
        names,
        not_after,
        system_bundle,
    })
}

/// The DNS names a certificate is for (its subject alternative names).
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    dns_names(cert, Field::SubjectAltNames).unwrap_or_default()
}

/// The end of a certificate's validity.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let seconds = parsed.validity().not_after.timestamp();
    u64::try_from(seconds)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// Issues the server certificate and key, then rewrites the bundle. Each
/// file is replaced whole (written beside it, then renamed), so a gateway
/// starting meanwhile reads the old pair or the new one.
fn issue(
    dir: &TlsDir,
    issuer: &Issuer<'_, KeyPair>,
    names: &[String],
    ca_pem: &str,
) -> Result<(SystemTime, Option<PathBuf>), PkiError> {
    let now = SystemTime::now();
    let not_after = now + SERVER_VALIDITY;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = (now - BACKDATE).into();
    params.not_after = OffsetDateTime::from(not_after);
    let cert = params.signed_by(&key, issuer)?;
    write_file(&dir.server_key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&dir.server_cert(), cert.pem().as_bytes(), 0o644)?;
    let system = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file());
    let mut bundle = match system {
        Some(path) => fs::read(path).map_err(|source| PkiError::Write {
            path: path.to_path_buf(),
            source,
        })?,
        None => Vec::new(),
    };
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(ca_pem.as_bytes());
    write_file(&dir.bundle(), &bundle, 0o644)?;
    Ok((not_after, system.map(Path::to_path_buf)))
}

fn check_names(names: &[String]) -> Result<(), PkiError> {
    let valid = |name: &str| {
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            && name.contains('.')
    };
    match names.iter().find(|n| !valid(n)) {
        Some(name) => Err(PkiError::BadName { name: name.clone() }),
        None => Ok(()),
    }
}

fn read(dir: &TlsDir, path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => PkiError::NoCa {
            dir: dir.dir.clone(),
            missing: path.to_path_buf(),
        },
        _ => PkiError::Unreadable {
            path: path.to_path_buf(),
            problem: e.to_string(),
        },
    })
}

fn first_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| PkiError::Unreadable {
            path: path.to_path_buf(),
            problem: "no PEM certificate in it".into(),
        })
}

enum Field {
    SubjectAltNames,
    PermittedSubtrees,
}

/// The DNS names of a certificate's subject alternative names, or of a CA's
/// permitted name constraints.
fn dns_names(cert: &CertificateDer<'_>, field: Field) -> Result<Vec<String>, String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    for extension in parsed.extensions() {
        match (extension.parsed_extension(), &field) {
            (ParsedExtension::SubjectAlternativeName(san), Field::SubjectAltNames) => {
                for name in &san.general_names {
                    if let GeneralName::DNSName(dns) = name {
                        names.push(dns.to_string());
                    }
                }
            }
            (ParsedExtension::NameConstraints(constraints), Field::PermittedSubtrees) => {
                for subtree in constraints.permitted_subtrees.iter().flatten() {
                    if let GeneralName::DNSName(dns) = subtree.base {
                        names.push(dns.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    if names.is_empty() {
        return Err(match field {
            Field::SubjectAltNames => "the certificate names no DNS name".into(),
            Field::PermittedSubtrees => {
                "not a CA made by `safedelete tls init` (it has no name constraints)".into()
            }
        });
    }
    Ok(names)
}

/// The directory: others may read the certificates in it (the tools on this
/// host need the CA's), the keys are 0600.
fn create_dir(dir: &Path) -> Result<(), PkiError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o755);
    builder.create(dir).map_err(|source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to a file beside `path` with `mode`, then renames it over
/// `path`: the file is never seen half written, and a key is never readable
/// by others, not even for a moment.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    let error = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(error)?;
    #[cfg(unix)]
    {
        // An old temporary file keeps its mode: set it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(error)?;
    }
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&tmp, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_that_are_not_dns_names_are_refused() {
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.example",
            "a_b.example",
            "1.2.3.4:443",
        ] {
            assert!(
                matches!(check_names(&names(&[bad])), Err(PkiError::BadName { .. })),
                "{bad:?}"
            );
        }
        check_names(&names(&["server.smartlead.ai", "api-2.example.com"])).unwrap();
    }

    #[test]
    fn renew_keeps_the_names_and_refuses_a_name_the_ca_does_not_cover() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(tmp.path().join("tls"));
        let first = init(&dir, &names(&["server.smartlead.ai", "smartlead.example"])).unwrap();
        let old_cert = fs::read(dir.server_cert()).unwrap();
        let old_ca = fs::read(dir.ca_cert()).unwrap();

        let renewed = renew(&dir, None).unwrap();
        assert_eq!(renewed.names, first.names);
        assert_ne!(fs::read(dir.server_cert()).unwrap(), old_cert);
        assert_eq!(fs::read(dir.ca_cert()).unwrap(), old_ca, "same CA");

        let err = renew(&dir, Some(&names(&["evil.example"]))).unwrap_err();
        assert!(matches!(err, PkiError::OutsideCa { .. }), "{err}");
        assert!(matches!(
            init(&dir, &names(&["server.smartlead.ai"])),
            Err(PkiError::Exists { .. })
        ));
        let empty = TlsDir::new(tmp.path().join("none"));
        assert!(matches!(renew(&empty, None), Err(PkiError::NoCa { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = TlsDir::new(tmp.path().join("tls"));
        init(&dir, &names(&[DEFAULT_NAME])).unwrap();
        let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.ca_key()), 0o600);
        assert_eq!(mode(dir.server_key()), 0o600);
        assert_eq!(mode(dir.ca_cert()), 0o644);
        assert_eq!(mode(dir.bundle()), 0o644);
    }
}
