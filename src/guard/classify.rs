//! Classification: which requests are destructive, by the operation table
//! ([`super::operations`]). The guard must act on what SmartLead will act on,
//! and SmartLead's router is lenient (case-insensitive, trailing slashes
//! ignored, percent-decoding, and a CDN in front that resolves dot segments
//! and merges slashes; its id parsing may accept `0108` or `108abc`). So the
//! path is canonicalised the way such a stack might read it; a request that
//! canonicalises onto a guarded route is guarded only when it is spelled
//! exactly as the route (`DELETE /api/v1/campaigns/{id}`), and refused
//! otherwise. Ids carried in a JSON body or the query are parsed strictly.
//! Any other `DELETE` under `/api/` is `unknown.delete`. Method overrides are
//! refused on every request.

use http::header::HeaderName;
use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::operations::{Carried, Op, Route, Seg, Verb, SPECS};

/// What a request is, as far as the guard cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Forwarded as it is.
    Passthrough,
    /// Guarded: the operation and what it acts on.
    Guarded(Guarded),
    /// A guarded route whose body says what it acts on (or, for the status
    /// route, whether it is destructive at all): read the body, then
    /// [`Pending::finish`].
    NeedsBody(Pending),
}

/// A guarded call: the operation and its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub op: Op,
    pub target: Target,
}

/// What an operation acts on. Every id is positive and fits SQLite's i64.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub campaign_id: Option<u64>,
    pub lead_id: Option<u64>,
    /// The object's own id: webhook, email account, list, key, block entry.
    pub id: Option<u64>,
    /// `email_account_ids` of a removal from a campaign (sorted, unique).
    pub ids: Vec<u64>,
    /// The canonical path of an `unknown.delete`.
    pub path: Option<String>,
}

impl Target {
    /// The key single flight claims and the trail records, e.g.
    /// `campaign:5`, `campaign:5/lead:7`, `email_account:9`, `path:/api/v1/x`.
    pub fn key(&self, op: Op) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.campaign_id {
            parts.push(format!("campaign:{c}"));
        }
        if let Some(l) = self.lead_id {
            parts.push(format!("lead:{l}"));
        }
        if let Some(id) = self.id {
            parts.push(format!("{}:{id}", object_noun(op)));
        }
        if !self.ids.is_empty() {
            let ids: Vec<String> = self.ids.iter().map(u64::to_string).collect();
            parts.push(format!("email_accounts:{}", ids.join(",")));
        }
        if let Some(p) = &self.path {
            parts.push(format!("path:{p}"));
        }
        parts.join("/")
    }

    /// A route template of the table (`/campaigns/{campaign}/leads/{lead}`)
    /// with the target's ids filled in.
    pub fn render(&self, template: &str) -> String {
        let id = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        template
            .replace("{campaign}", &id(self.campaign_id))
            .replace("{lead}", &id(self.lead_id))
            .replace("{id}", &id(self.id))
    }

    /// The object's own id, as stored in `target_id` for history queries:
    /// the lead, or the object itself.
    pub fn object_id(&self) -> Option<u64> {
        self.lead_id.or(self.id)
    }

    /// For people: `campaign 5`, `lead 7 in campaign 5`, `email account 9`.
    pub fn describe(&self, op: Op) -> String {
        let object = match (self.lead_id, self.id, self.ids.as_slice()) {
            (Some(l), _, _) => Some(format!("lead {l}")),
            (_, Some(id), _) => Some(format!("{} {id}", object_noun(op).replace('_', " "))),
            (_, _, ids) if !ids.is_empty() => {
                let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
                Some(format!("email accounts {}", ids.join(", ")))
            }
            _ => None,
        };
        match (object, self.campaign_id, &self.path) {
            (Some(o), Some(c), _) => format!("{o} of campaign {c}"),
            (Some(o), None, _) => o,
            (None, Some(c), _) => format!("campaign {c}"),
            (None, None, Some(p)) => p.clone(),
            (None, None, None) => "the target".to_string(),
        }
    }
}

/// What the object id of an operation names.
fn object_noun(op: Op) -> &'static str {
    match op {
        Op::CampaignWebhookDelete | Op::WebhookDelete => "webhook",
        Op::EmailAccountDelete => "email_account",
        Op::LeadListDelete => "lead_list",
        Op::ClientApiKeyDelete => "client_api_key",
        Op::DomainBlockDelete => "domain_block",
        _ => "id",
    }
}

/// A guarded route whose body is still to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    op: Op,
    target: Target,
    carried: Carried,
    /// Whether the request was spelled exactly as the route.
    exact: bool,
}

impl Pending {
    pub fn op(&self) -> Op {
        self.op
    }

    /// Classifies with the body: `Ok(None)` when the call turns out not to
    /// be destructive (a status change that is not a stop).
    pub fn finish(self, body: &[u8]) -> Result<Option<Guarded>, ClassifyError> {
        let Pending {
            op,
            mut target,
            carried,
            exact,
        } = self;
        let bad = || ClassifyError::BadBody { op };
        let json: Value = serde_json::from_slice(body).map_err(|_| bad())?;
        match carried {
            Carried::BodyStopStatus => {
                let stop = json
                    .get("status")
                    .and_then(Value::as_str)
                    .is_some_and(means_stop);
                if !stop {
                    return Ok(None);
                }
                if !exact {
                    return Err(ClassifyError::Ambiguous {
                        op,
                        campaign_id: target.campaign_id.map(|c| c as i64),
                    });
                }
            }
            Carried::BodyId => {
                target.id = Some(json.get("id").and_then(strict_id).ok_or_else(bad)?);
            }
            Carried::BodyEmailAccountIds => {
                let ids = json
                    .get("email_account_ids")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty())
                    .ok_or_else(bad)?;
                let mut parsed = ids
                    .iter()
                    .map(strict_id)
                    .collect::<Option<Vec<u64>>>()
                    .ok_or_else(bad)?;
                parsed.sort_unstable();
                parsed.dedup();
                target.ids = parsed;
            }
            Carried::Nothing | Carried::QueryId => {}
        }
        Ok(Some(Guarded { op, target }))
    }
}

/// Whether a status value could mean stop (`STOPPED`, and the `STOP` that
/// SmartLead's own CLI suggests, in any case): treated as a stop.
pub fn means_stop(status: &str) -> bool {
    status.trim().to_ascii_uppercase().starts_with("STOP")
}

/// A JSON id: a positive integer, or a string of one written canonically
/// (SmartLead's validation converts those), that fits an i64.
fn strict_id(v: &Value) -> Option<u64> {
    let id = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) if is_canonical_id(s) => s.parse().ok()?,
        _ => return None,
    };
    (id > 0 && id <= i64::MAX as u64).then_some(id)
}

/// Why a request is refused before anything else happens (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("method overrides are not accepted ({0}); send the real method instead")]
    MethodOverride(&'static str),
    // The message never repeats the path: it could hold a pasted key.
    #[error(
        "this request could {} but is not spelled exactly as {}; send exactly that form so the guard can check it",
        .op.spec().destroys_verb(), .op.spec().canonical_form()
    )]
    Ambiguous {
        op: Op,
        /// The campaign it would reach, as far as it can be told (for the
        /// audit trail's per-campaign history).
        campaign_id: Option<i64>,
    },
    #[error("id {1} is out of range; SmartLead's ids are at most 9223372036854775807")]
    IdOutOfRange(Op, String),
    #[error(
        "the body of {op} must be JSON naming what it acts on ({}); nothing was forwarded",
        .op.spec().body_form()
    )]
    BadBody { op: Op },
    #[error(
        "form-encoded bodies are not accepted on a guarded route or a campaign's own route \
         (a `_method` field could turn them into a delete); SmartLead's API takes JSON"
    )]
    FormOnGuardedRoute,
}

impl ClassifyError {
    /// The guarded operation a refused request was (spelled another way),
    /// rather than some other request refused before classification.
    pub fn operation(&self) -> Option<Op> {
        match self {
            ClassifyError::Ambiguous { op, .. }
            | ClassifyError::IdOutOfRange(op, _)
            | ClassifyError::BadBody { op } => Some(*op),
            _ => None,
        }
    }
}

static OVERRIDE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-http-method"),
];

/// Classifies a request by method, raw path, raw query and headers.
pub fn classify(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Operation, ClassifyError> {
    for name in &OVERRIDE_HEADERS {
        if headers.contains_key(name) {
            return Err(ClassifyError::MethodOverride(name.as_str()));
        }
    }
    if let Some(q) = query {
        if has_method_param(q) {
            return Err(ClassifyError::MethodOverride("_method query parameter"));
        }
    }
    let is_delete = method.as_str().eq_ignore_ascii_case("DELETE");
    let is_post = method.as_str().eq_ignore_ascii_case("POST");
    let is_patch = method.as_str().eq_ignore_ascii_case("PATCH");
    if !(is_delete || is_post || is_patch) {
        return Ok(Operation::Passthrough);
    }
    let segments = canonical_segments(path);
    let form = is_form(headers);
    let Some(rest) = segments.strip_prefix(&["api".to_string(), "v1".to_string()][..]) else {
        return Ok(unknown_or_passthrough(is_delete, &segments));
    };
    if form && !is_delete && is_campaign_item(rest) {
        return Err(ClassifyError::FormOnGuardedRoute);
    }
    let verb_matches = |verb: Verb| match verb {
        Verb::Delete => is_delete,
        Verb::Post => is_post,
        Verb::PostOrPatch => is_post || is_patch,
    };
    // The most literal route wins (`leads/delete-domain-block-list` over
    // `leads/{lead_id}`).
    let found = SPECS
        .iter()
        .flat_map(|spec| spec.routes.iter().map(move |r| (spec.op, r)))
        .filter(|(_, r)| verb_matches(r.verb) && fits(r.path, rest))
        .max_by_key(|(_, r)| r.path.iter().filter(|s| matches!(s, Seg::Lit(_))).count());
    let Some((op, route)) = found else {
        return Ok(unknown_or_passthrough(is_delete, &segments));
    };
    if op == Op::UnknownDelete {
        return Ok(unknown_or_passthrough(is_delete, &segments));
    }
    if form && route.carried.needs_body() {
        return Err(ClassifyError::FormOnGuardedRoute);
    }
    let campaign_id = placeholder(route, rest, Seg::Campaign).and_then(leading_id);
    let exact = is_exact(method, path, route, rest);
    if !exact && route.carried != Carried::BodyStopStatus {
        return Err(ClassifyError::Ambiguous { op, campaign_id });
    }
    let mut target = Target::default();
    for (seg, value) in route.path.iter().zip(rest) {
        let slot = match seg {
            Seg::Lit(_) => continue,
            Seg::Campaign => &mut target.campaign_id,
            Seg::Lead => &mut target.lead_id,
            Seg::Id => &mut target.id,
        };
        match value.parse::<i64>() {
            // Ids are stored as SQLite integers: one past i64 would wrap negative.
            Ok(id) if id > 0 => *slot = Some(id as u64),
            _ if !exact => {}
            _ => return Err(ClassifyError::IdOutOfRange(op, value.clone())),
        }
    }
    if route.carried == Carried::QueryId {
        target.id = Some(query_id(query).ok_or(ClassifyError::BadBody { op })?);
    }
    if route.carried.needs_body() {
        return Ok(Operation::NeedsBody(Pending {
            op,
            target,
            carried: route.carried,
            exact,
        }));
    }
    Ok(Operation::Guarded(Guarded { op, target }))
}

/// `unknown.delete` for any other DELETE under `/api/`, else passthrough.
fn unknown_or_passthrough(is_delete: bool, segments: &[String]) -> Operation {
    if !is_delete || segments.first().map(String::as_str) != Some("api") {
        return Operation::Passthrough;
    }
    Operation::Guarded(Guarded {
        op: Op::UnknownDelete,
        target: Target {
            path: Some(format!("/{}", segments.join("/"))),
            ..Target::default()
        },
    })
}

/// Whether the canonical segments fit a route pattern.
fn fits(pattern: &[Seg], rest: &[String]) -> bool {
    pattern.len() == rest.len()
        && pattern.iter().zip(rest).all(|(p, s)| match p {
            Seg::Lit(l) => l == s,
            _ => true,
        })
}

/// The segment in the place of `which`, if the route has one.
fn placeholder<'a>(route: &Route, rest: &'a [String], which: Seg) -> Option<&'a str> {
    route
        .path
        .iter()
        .position(|s| *s == which)
        .map(|i| rest[i].as_str())
}

/// Whether the request is spelled exactly as the route: the method in
/// capitals, the path byte for byte `/api/v1/` and the route's segments,
/// with canonical ids.
fn is_exact(method: &Method, path: &str, route: &Route, rest: &[String]) -> bool {
    let method_ok = match route.verb {
        Verb::Delete => *method == Method::DELETE,
        Verb::Post => *method == Method::POST,
        Verb::PostOrPatch => *method == Method::POST || *method == Method::PATCH,
    };
    let ids_ok = route
        .path
        .iter()
        .zip(rest)
        .all(|(seg, s)| matches!(seg, Seg::Lit(_)) || is_canonical_id(s));
    method_ok && ids_ok && path.strip_prefix("/api/v1/") == Some(rest.join("/").as_str())
}

/// The `id` query parameter, exactly once and canonical.
fn query_id(query: Option<&str>) -> Option<u64> {
    let mut found = None;
    for pair in query?.split(['&', ';']) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode_str(name).decode_utf8_lossy();
        if !name.trim().eq_ignore_ascii_case("id") {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(strict_id(&Value::String(value.to_string()))?);
    }
    found
}

/// The number a lenient id parser would read (`0108`, `108abc`), if it fits.
fn leading_id(id: &str) -> Option<i64> {
    let digits = id.len() - id.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    id[..digits].parse::<i64>().ok().filter(|v| *v > 0)
}

/// `campaigns/{one segment}`, after canonicalisation.
fn is_campaign_item(rest: &[String]) -> bool {
    rest.len() == 2 && rest[0] == "campaigns"
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let v = v.trim_start().to_ascii_lowercase();
            v.starts_with("application/x-www-form-urlencoded")
                || v.starts_with("multipart/form-data")
        })
        .unwrap_or(false)
}

/// A decimal id without leading zeros (what SmartLead issues).
fn is_canonical_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 19
        && id.bytes().all(|b| b.is_ascii_digit())
        && !(id.len() > 1 && id.starts_with('0'))
}

/// The path as a lenient stack might read it: backslashes as slashes, matrix
/// parameters dropped, percent-decoding repeated (double encoding), empty and
/// `.` segments dropped, `..` resolved, lower case.
pub fn canonical_segments(path: &str) -> Vec<String> {
    let mut decoded = path.to_string();
    for _ in 0..3 {
        let next = percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let mut out: Vec<String> = Vec::new();
    for raw in decoded.split(['/', '\\']) {
        let segment = raw.split(';').next().unwrap_or("").trim();
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_ascii_lowercase()),
        }
    }
    out
}

fn has_method_param(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        let name = percent_decode_str(name).decode_utf8_lossy();
        // `_method`, and framework spellings such as `_method[]`.
        name.trim()
            .as_bytes()
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"_method"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delete(path: &str) -> Result<Operation, ClassifyError> {
        classify(&Method::DELETE, path, None, &HeaderMap::new())
    }

    fn campaign_delete(campaign_id: u64) -> Operation {
        Operation::Guarded(Guarded {
            op: Op::CampaignDelete,
            target: Target {
                campaign_id: Some(campaign_id),
                ..Target::default()
            },
        })
    }

    fn ambiguous(campaign_id: Option<i64>) -> ClassifyError {
        ClassifyError::Ambiguous {
            op: Op::CampaignDelete,
            campaign_id,
        }
    }

    #[test]
    fn the_exact_spelling_is_guarded() {
        assert_eq!(delete("/api/v1/campaigns/108"), Ok(campaign_delete(108)));
    }

    #[test]
    fn ids_beyond_i64_are_refused_not_wrapped() {
        assert_eq!(
            delete("/api/v1/campaigns/9223372036854775807"),
            Ok(campaign_delete(i64::MAX as u64))
        );
        for id in ["9223372036854775808", "9999999999999999999"] {
            assert_eq!(
                delete(&format!("/api/v1/campaigns/{id}")),
                Err(ClassifyError::IdOutOfRange(
                    Op::CampaignDelete,
                    id.to_string()
                ))
            );
        }
    }

    #[test]
    fn a_refused_spelling_names_the_campaign_it_would_reach() {
        for (path, id) in [
            ("/api/v1/campaigns/108/", Some(108)),
            ("/api/v1/campaigns/%31%30%38", Some(108)),
            ("/api/v1/campaigns/0108", Some(108)),
            ("/api/v1/campaigns/108abc", Some(108)),
            ("/api/v1/campaigns/abc", None),
            ("/api/v1/campaigns/99999999999999999999999/", None),
        ] {
            assert_eq!(delete(path), Err(ambiguous(id)), "{path}");
        }
    }

    #[test]
    fn every_other_spelling_of_a_campaign_delete_is_refused() {
        for path in [
            "/api/v1/campaigns/108/",
            "/API/v1/campaigns/108",
            "/api/v1/Campaigns/108",
            "/api/v1/campaigns/%31%30%38",
            "/api/v1/campaigns/%2531%2530%2538",
            "/api/v1//campaigns/108",
            "//api/v1/campaigns/108",
            "/api/v1/x/../campaigns/108",
            "/api/v1/./campaigns/108",
            "/api/v1/campaigns/0108",
            "/api/v1/campaigns/108;x=1",
            "/api/v1/campaigns/108abc",
            "/api/v1/campaigns/%20108",
            "/api/v1/campaigns%2F108",
            "/api/v1\\campaigns\\108",
            "/api/v1/campaigns/99999999999999999999999",
            "/api/v1/campaigns/abc",
            "/api/v1/campaigns/9223372036854775808/",
        ] {
            let result = delete(path);
            assert!(
                matches!(
                    result,
                    Err(ClassifyError::Ambiguous {
                        op: Op::CampaignDelete,
                        ..
                    })
                ),
                "{path}: {result:?}"
            );
        }
    }

    #[test]
    fn a_lowercase_delete_method_is_refused_on_a_campaign() {
        let m = Method::from_bytes(b"delete").unwrap();
        assert!(classify(&m, "/api/v1/campaigns/108", None, &HeaderMap::new()).is_err());
    }

    #[test]
    fn other_deletes_are_unknown_deletes_and_other_methods_pass_through() {
        let unknown = |path: &str| {
            Ok(Operation::Guarded(Guarded {
                op: Op::UnknownDelete,
                target: Target {
                    path: Some(path.to_string()),
                    ..Target::default()
                },
            }))
        };
        assert_eq!(delete("/api/v1/campaigns"), unknown("/api/v1/campaigns"));
        assert_eq!(
            delete("/api/v1/campaigns/108/.."),
            unknown("/api/v1/campaigns")
        );
        assert_eq!(
            delete("/api/v1/email-accounts/tag-mapping"),
            unknown("/api/v1/email-accounts/tag-mapping")
        );
        assert_eq!(delete("/other/thing"), Ok(Operation::Passthrough));
        let get = classify(
            &Method::GET,
            "/api/v1/campaigns/108/",
            None,
            &HeaderMap::new(),
        );
        assert_eq!(get, Ok(Operation::Passthrough));
    }

    fn guarded(
        method: Method,
        path: &str,
        query: Option<&str>,
    ) -> Result<Operation, ClassifyError> {
        classify(&method, path, query, &HeaderMap::new())
    }

    #[test]
    fn every_route_of_the_table_is_classified_with_its_target() {
        let target = |op: Op, t: Target| Ok(Operation::Guarded(Guarded { op, target: t }));
        let t = |campaign_id: Option<u64>, lead_id: Option<u64>, id: Option<u64>| Target {
            campaign_id,
            lead_id,
            id,
            ..Target::default()
        };
        assert_eq!(
            guarded(Method::DELETE, "/api/v1/campaigns/5/leads/7", None),
            target(Op::CampaignLeadDelete, t(Some(5), Some(7), None))
        );
        assert_eq!(
            guarded(
                Method::POST,
                "/api/v1/campaigns/5/leads/7/unsubscribe",
                None
            ),
            target(Op::CampaignLeadUnsubscribe, t(Some(5), Some(7), None))
        );
        assert_eq!(
            guarded(Method::POST, "/api/v1/leads/7/unsubscribe", None),
            target(Op::LeadUnsubscribe, t(None, Some(7), None))
        );
        assert_eq!(
            guarded(Method::DELETE, "/api/v1/leads/7", None),
            target(Op::LeadDelete, t(None, Some(7), None))
        );
        assert_eq!(
            guarded(Method::DELETE, "/api/v1/campaigns/5/webhooks/3", None),
            target(Op::CampaignWebhookDelete, t(Some(5), None, Some(3)))
        );
        assert_eq!(
            guarded(Method::DELETE, "/api/v1/email-accounts/9", None),
            target(Op::EmailAccountDelete, t(None, None, Some(9)))
        );
        assert_eq!(
            guarded(Method::DELETE, "/api/v1/lead-list/4", None),
            target(Op::LeadListDelete, t(None, None, Some(4)))
        );
        assert_eq!(
            guarded(Method::DELETE, "/api/v1/client/api-key/2", None),
            target(Op::ClientApiKeyDelete, t(None, None, Some(2)))
        );
        assert_eq!(
            guarded(
                Method::DELETE,
                "/api/v1/leads/delete-domain-block-list",
                Some("api_key=k&id=8")
            ),
            target(Op::DomainBlockDelete, t(None, None, Some(8)))
        );
        // The body says the rest.
        let Ok(Operation::NeedsBody(p)) = guarded(Method::DELETE, "/api/v1/webhook/delete", None)
        else {
            panic!("webhook.delete needs its body")
        };
        assert_eq!(
            p.finish(br#"{"id": 3}"#),
            Ok(Some(Guarded {
                op: Op::WebhookDelete,
                target: t(None, None, Some(3))
            }))
        );
        let Ok(Operation::NeedsBody(p)) =
            guarded(Method::DELETE, "/api/v1/campaigns/5/email-accounts", None)
        else {
            panic!("the removal needs its body")
        };
        let got = p
            .finish(br#"{"email_account_ids": [2, "1", 2]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(got.target.ids, vec![1, 2]);
        assert_eq!(got.target.key(got.op), "campaign:5/email_accounts:1,2");
    }

    #[test]
    fn bodies_and_query_ids_are_parsed_strictly() {
        let pending = |method: Method, path: &str| match guarded(method, path, None) {
            Ok(Operation::NeedsBody(p)) => p,
            other => panic!("{path}: {other:?}"),
        };
        for body in [
            &b"{"[..],
            b"[]",
            br#"{"id": 0}"#,
            br#"{"id": -1}"#,
            br#"{"id": 1.5}"#,
            br#"{"id": "05"}"#,
            br#"{"id": "5x"}"#,
            br#"{}"#,
            br#"{"id": 9223372036854775808}"#,
        ] {
            let r = pending(Method::DELETE, "/api/v1/webhook/delete").finish(body);
            assert_eq!(
                r,
                Err(ClassifyError::BadBody {
                    op: Op::WebhookDelete
                }),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &br#"{"email_account_ids": []}"#[..],
            br#"{"email_account_ids": [1, "x"]}"#,
            br#"{"email_account_ids": 1}"#,
        ] {
            let r = pending(Method::DELETE, "/api/v1/campaigns/5/email-accounts").finish(body);
            assert!(
                matches!(r, Err(ClassifyError::BadBody { .. })),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for query in ["id=8&id=9", "id=08", "id=", "x=1", "id=8x"] {
            let r = guarded(
                Method::DELETE,
                "/api/v1/leads/delete-domain-block-list",
                Some(query),
            );
            assert_eq!(
                r,
                Err(ClassifyError::BadBody {
                    op: Op::DomainBlockDelete
                }),
                "{query}"
            );
        }
    }

    #[test]
    fn a_stop_is_guarded_whatever_its_spelling_and_other_statuses_pass() {
        let p = || match guarded(Method::POST, "/api/v1/campaigns/5/status", None) {
            Ok(Operation::NeedsBody(p)) => p,
            other => panic!("{other:?}"),
        };
        for stop in ["STOPPED", "stop", " Stop ", "STOP"] {
            let body = format!(r#"{{"status": "{stop}"}}"#);
            let got = p().finish(body.as_bytes()).unwrap().expect(stop);
            assert_eq!(got.op, Op::CampaignStop);
        }
        for other in [r#"{"status": "PAUSED"}"#, r#"{"status": "START"}"#, r#"{}"#] {
            assert_eq!(p().finish(other.as_bytes()), Ok(None), "{other}");
        }
        assert!(p().finish(b"status=STOPPED").is_err());
        // A stop spelt another way is refused; a pause spelt another way passes.
        let lenient = || match guarded(Method::PATCH, "/api/v1/campaigns/5/status/", None) {
            Ok(Operation::NeedsBody(p)) => p,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            lenient().finish(br#"{"status":"STOPPED"}"#),
            Err(ClassifyError::Ambiguous {
                op: Op::CampaignStop,
                ..
            })
        ));
        assert_eq!(lenient().finish(br#"{"status":"PAUSED"}"#), Ok(None));
    }

    #[test]
    fn spellings_of_every_route_family_are_refused() {
        for (method, path) in [
            (Method::DELETE, "/api/v1/campaigns/5/leads/07"),
            (Method::DELETE, "/API/v1/campaigns/5/leads/7"),
            (Method::POST, "/api/v1/leads/7/unsubscribe/"),
            (Method::DELETE, "/api/v1//leads/7"),
            (Method::DELETE, "/api/v1/campaigns/5/webhooks/3/"),
            (Method::DELETE, "/api/v1/Email-Accounts/9"),
            (Method::DELETE, "/api/v1/lead-list/4;x"),
            (Method::DELETE, "/api/v1/client/api-key/%32"),
            (Method::DELETE, "/api/v1/webhook/x/../delete"),
            (Method::DELETE, "/api/v1/campaigns/5/email-accounts/"),
        ] {
            let r = guarded(method.clone(), path, Some("id=1"));
            assert!(
                matches!(r, Err(ClassifyError::Ambiguous { .. })),
                "{method} {path}: {r:?}"
            );
        }
    }

    #[test]
    fn method_overrides_are_refused_on_any_request() {
        for name in [
            "X-HTTP-Method-Override",
            "x-method-override",
            "X-HTTP-Method",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_static("DELETE"),
            );
            let r = classify(&Method::POST, "/api/v1/campaigns/108", None, &h);
            assert!(matches!(r, Err(ClassifyError::MethodOverride(_))), "{name}");
        }
        for q in [
            "_method=DELETE",
            "api_key=x&_METHOD=delete",
            "%5Fmethod=DELETE",
        ] {
            let r = classify(
                &Method::POST,
                "/api/v1/campaigns/108",
                Some(q),
                &HeaderMap::new(),
            );
            assert!(matches!(r, Err(ClassifyError::MethodOverride(_))), "{q}");
        }
        let ok = classify(&Method::GET, "/x", Some("my_method=1"), &HeaderMap::new());
        assert_eq!(ok, Ok(Operation::Passthrough));
    }

    #[test]
    fn form_bodies_on_a_campaign_route_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        for path in ["/api/v1/campaigns/101", "/API/v1/campaigns/101/"] {
            let r = classify(&Method::POST, path, None, &h);
            assert_eq!(r, Err(ClassifyError::FormOnGuardedRoute), "{path}");
        }
        let leads = classify(&Method::POST, "/api/v1/campaigns/101/leads", None, &h);
        assert_eq!(leads, Ok(Operation::Passthrough));
    }
}
