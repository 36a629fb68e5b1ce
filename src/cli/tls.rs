//! `safedelete tls init` and `tls renew`: the private CA and certificate that
//! let tools with a hard-coded `https://server.smartlead.ai` reach the
//! gateway, and what each kind of tool needs to trust it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::Subcommand;

use super::CliError;
use crate::config::{Config, ProcessEnv, DEFAULT_CONFIG_PATH};
use crate::tls::pki::{self, Issued, TlsDir};

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Create a private CA and a certificate for the names tools call, and
    /// point [listen_tls] at them.
    Init {
        /// Where the CA, the certificate and their keys are written.
        #[arg(long, value_name = "DIR", default_value = pki::DEFAULT_DIR)]
        dir: PathBuf,
        /// A name the certificate is for (repeat for several).
        #[arg(long = "name", value_name = "NAME", default_value = pki::DEFAULT_NAME)]
        names: Vec<String>,
        /// The config file [listen_tls] is written to (created if missing).
        #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The gateway's address as the tools' machines reach it, for the
        /// hosts line (default: the `listen` address, when it names one).
        #[arg(long, value_name = "IP")]
        address: Option<IpAddr>,
    },
    /// Re-issue the gateway's certificate from the same CA (the tools keep
    /// trusting it); restart the gateway to serve it.
    Renew {
        #[arg(long, value_name = "DIR", default_value = pki::DEFAULT_DIR)]
        dir: PathBuf,
        /// Issue it for these names instead of the current certificate's
        /// (the CA must cover them).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TlsCliError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("cannot read {} as TOML: {problem}", .config.display())]
    ConfigSyntax { config: PathBuf, problem: String },
    #[error("cannot write {}", .config.display())]
    ConfigWrite {
        config: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn run(command: TlsCommand) -> Result<(), CliError> {
    match command {
        TlsCommand::Init {
            dir,
            names,
            config,
            address,
        } => init(&TlsDir::new(dir), &names, &config, address),
        TlsCommand::Renew { dir, names } => {
            let dir = TlsDir::new(dir);
            let names = (!names.is_empty()).then_some(names.as_slice());
            let issued = pki::renew(&dir, names).map_err(TlsCliError::from)?;
            println!(
                "Re-issued {} for {}, valid until {}, from the same CA: the tools need nothing new.",
                dir.server_cert().display(),
                issued.names.join(", "),
                date(issued.not_after)
            );
            println!("Restart the gateway (or send it SIGTERM and start it again) to serve it.");
            Ok(())
        }
    }
}

fn init(
    dir: &TlsDir,
    names: &[String],
    config: &Path,
    address: Option<IpAddr>,
) -> Result<(), CliError> {
    let cert_file = dir.server_cert().display().to_string();
    let key_file = dir.server_key().display().to_string();
    // Check the config before anything is created: a refusal leaves no files.
    let (document, edit) = listen_tls_document(config, &cert_file, &key_file)?;
    let issued = pki::init(dir, names).map_err(TlsCliError::from)?;
    std::fs::write(config, document.to_string()).map_err(|source| TlsCliError::ConfigWrite {
        config: config.to_path_buf(),
        source,
    })?;
    // The listener the gateway will have. A config that does not load here
    // (a SmartLead key not in this shell's environment) is not this
    // command's to fix: the CA and [listen_tls] are written all the same.
    let listen = match Config::load(Some(config), &ProcessEnv) {
        Ok(loaded) => loaded.listen,
        Err(err) => {
            eprintln!(
                "safedelete: note: {} does not load in this environment ({err}); `safedelete check-config` shows what the gateway will need",
                config.display()
            );
            document
                .get("listen")
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse().ok())
                .unwrap_or(crate::config::DEFAULT_LISTEN)
        }
    };
    print_init(dir, &issued, config, edit, listen, address);
    Ok(())
}

/// The config with `[listen_tls]` pointing at the new files, comments and
/// everything else kept.
fn listen_tls_document(
    config: &Path,
    cert_file: &str,
    key_file: &str,
) -> Result<(toml_edit::DocumentMut, ListenTlsEdit), TlsCliError> {
    let text = match std::fs::read_to_string(config) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(TlsCliError::ConfigWrite {
                config: config.to_path_buf(),
                source,
            })
        }
    };
    let mut document: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| TlsCliError::ConfigSyntax {
                config: config.to_path_buf(),
                problem: e.to_string(),
            })?;
    let pair = |prefix: Option<&str>| {
        let mut table = toml_edit::Table::new();
        if let Some(prefix) = prefix {
            table.decor_mut().set_prefix(prefix);
        }
        table["cert_file"] = toml_edit::value(cert_file);
        table["key_file"] = toml_edit::value(key_file);
        table
    };
    let same = |item: &dyn toml_edit::TableLike| {
        item.get("cert_file").and_then(|v| v.as_str()) == Some(cert_file)
            && item.get("key_file").and_then(|v| v.as_str()) == Some(key_file)
    };
    let Some(existing) = document.get_mut("listen_tls") else {
        document["listen_tls"] = toml_edit::Item::Table(pair(Some(
            "\n# Written by `safedelete tls init`: the certificate tools with a\n\
             # hard-coded https://server.smartlead.ai see.\n",
        )));
        return Ok((document, ListenTlsEdit::Written));
    };
    let Some(existing) = existing.as_table_like_mut() else {
        return Err(TlsCliError::ConfigSyntax {
            config: config.to_path_buf(),
            problem: "listen_tls is not a table".into(),
        });
    };
    if same(&*existing) {
        return Ok((document, ListenTlsEdit::AlreadySet));
    }
    // The listener already serves a certificate of its own: this one is
    // added beside it, served to the clients that ask for its names.
    let certificates = existing
        .entry("certificates")
        .or_insert(toml_edit::Item::ArrayOfTables(
            toml_edit::ArrayOfTables::new(),
        ));
    match certificates {
        toml_edit::Item::ArrayOfTables(tables) => {
            if !tables.iter().any(|t| same(t)) {
                tables.push(pair(None));
            }
        }
        toml_edit::Item::Value(toml_edit::Value::Array(array)) => {
            let present = array
                .iter()
                .filter_map(|v| v.as_inline_table())
                .any(|t| same(t));
            if !present {
                array.push(pair(None).into_inline_table());
            }
        }
        _ => {
            return Err(TlsCliError::ConfigSyntax {
                config: config.to_path_buf(),
                problem: "listen_tls.certificates is not a list of tables".into(),
            })
        }
    }
    Ok((document, ListenTlsEdit::Added))
}

/// What `tls init` did to `[listen_tls]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenTlsEdit {
    /// The section was written: this is the listener's certificate.
    Written,
    /// It already pointed at these files.
    AlreadySet,
    /// The listener has its own certificate: this one was added to
    /// `[[listen_tls.certificates]]`, chosen by SNI.
    Added,
}

fn print_init(
    dir: &TlsDir,
    issued: &Issued,
    config: &Path,
    edit: ListenTlsEdit,
    listen: std::net::SocketAddr,
    address: Option<IpAddr>,
) {
    let names = issued.names.join(", ");
    println!("Created in {}:", dir.dir.display());
    let files = [
        (
            dir.ca_cert(),
            "the private CA's certificate: the tools trust it (not secret)".to_string(),
        ),
        (
            dir.ca_key(),
            "its key (0600): keep it here; only `safedelete tls renew` uses it".into(),
        ),
        (
            dir.server_cert(),
            format!(
                "the gateway's certificate for {names}, valid until {}",
                date(issued.not_after)
            ),
        ),
        (dir.server_key(), "its key (0600)".into()),
        (
            dir.bundle(),
            match &issued.system_bundle {
                Some(system) => format!(
                    "the system's trusted CAs ({}) plus this CA",
                    system.display()
                ),
                None => "this CA alone (no system trust store was found to add it to)".into(),
            },
        ),
    ];
    for (path, what) in files {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        println!("  {file:<16} {what}");
    }
    println!("The CA can vouch for {names} and nothing else.");
    println!();
    match edit {
        ListenTlsEdit::Written => println!("Wrote [listen_tls] to {}:", config.display()),
        ListenTlsEdit::AlreadySet => {
            println!("[listen_tls] in {} already uses it:", config.display())
        }
        ListenTlsEdit::Added => println!(
            "Added to [[listen_tls.certificates]] in {} (the listener's own certificate stays\n\
             the default; clients that ask for {names} get this one):",
            config.display()
        ),
    }
    println!(
        "  cert_file = {:?}",
        dir.server_cert().display().to_string()
    );
    println!("  key_file = {:?}", dir.server_key().display().to_string());
    println!();

    let mut step = 1;
    if listen.port() != 443 {
        println!(
            "{step}. Tools that call https://{} connect to port 443: set listen = \"0.0.0.0:443\" in {}\n   (now {listen}; a port below 1024 needs root or CAP_NET_BIND_SERVICE).",
            issued.names[0],
            config.display()
        );
        step += 1;
    }
    println!("{step}. Start (or restart) the gateway: `safedelete serve`.");
    step += 1;
    let host_address = address
        // Other machines cannot reach a loopback or wildcard listen address.
        .or_else(|| Some(listen.ip()).filter(|ip| !ip.is_unspecified() && !ip.is_loopback()))
        .map(|ip| ip.to_string());
    println!(
        "{step}. On each machine whose tools should go through the gateway, add this line to /etc/hosts:"
    );
    match host_address {
        Some(ip) => println!("   {ip} {}", issued.names.join(" ")),
        None => println!(
            "   GATEWAY_IP {}    (GATEWAY_IP: the gateway's address; --address IP prints it here)",
            issued.names.join(" ")
        ),
    }
    println!(
        "   On the gateway's own host, only with [upstream] connect_to = \"IP:443\" set to SmartLead's real\n   address: without it the gateway would reach itself instead of SmartLead (it refuses to start)."
    );
    step += 1;
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p).display().to_string();
    let ca = absolute(dir.ca_cert());
    let bundle = absolute(dir.bundle());
    println!("{step}. Make the tools trust the CA:");
    println!("   Node (SmartLead's CLI):  export NODE_EXTRA_CA_CERTS={ca}");
    println!("   Python requests:         export REQUESTS_CA_BUNDLE={bundle}");
    println!("   curl:                    export CURL_CA_BUNDLE={bundle}");
    println!("   OpenSSL (and curl, where SSL_CERT_DIR is not set): export SSL_CERT_FILE={bundle}");
    println!("   Debian's system store:   sudo cp {ca} /usr/local/share/ca-certificates/safedelete.crt && sudo update-ca-certificates");
}

/// A date as `YYYY-MM-DD` (UTC).
fn date(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    )
}
