use super::*;
use crate::db::Location;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let file = Config::parse(text).map_err(|source| ConfigError::Parse {
        path: PathBuf::from("test.toml"),
        source: Box::new(source),
    })?;
    let env: std::collections::HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_file(file, &env)
}

#[test]
fn built_in_defaults_point_at_smartlead() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.upstream.url(), "https://server.smartlead.ai");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8081");
    assert_eq!(
        c.database.store,
        Location::Sqlite(PathBuf::from("data/safedelete.db"))
    );
    assert_eq!(c.audit.redact_params, vec!["api_key".to_string()]);
    assert_eq!(c.log.format, LogFormat::Pretty);
}

#[test]
fn environment_overrides_the_file() {
    let c = load(
        "listen = \"127.0.0.1:1000\"\n[upstream]\nurl = \"http://a.example\"\n",
        &[
            ("SAFEDELETE_LISTEN", "127.0.0.1:2000"),
            ("SAFEDELETE_UPSTREAM", "http://127.0.0.1:9"),
            ("SAFEDELETE_ADMIN_LISTEN", "127.0.0.1:3000"),
            ("SAFEDELETE_DATABASE", "/tmp/x.db"),
            ("SAFEDELETE_LOG_FORMAT", "json"),
            ("SAFEDELETE_LOG", "debug"),
            ("SAFEDELETE_ADMIN_TOKEN", "0123456789abcdef0123"),
        ],
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:2000");
    assert_eq!(c.upstream.url(), "http://127.0.0.1:9");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(
        c.database.store,
        Location::Sqlite(PathBuf::from("/tmp/x.db"))
    );
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.filter.as_str(), "debug");
    assert_eq!(c.admin.token.unwrap().expose(), "0123456789abcdef0123");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let err = load("[upstream]\nurll = \"http://x\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("unknown field `urll`"), "{err}");
}

#[test]
fn a_bad_address_names_the_key() {
    let err = load("listen = \"localhost\"\n", &[]).unwrap_err();
    assert!(err.to_string().starts_with("listen: `localhost`"), "{err}");
    let err = load("", &[("SAFEDELETE_ADMIN_LISTEN", "nope")]).unwrap_err();
    assert!(
        err.to_string().starts_with("SAFEDELETE_ADMIN_LISTEN:"),
        "{err}"
    );
}

#[test]
fn upstream_must_be_an_http_origin() {
    for bad in [
        "ftp://x",
        "not a url",
        "https://x/api/v1",
        "http://u:p@x",
        "https://x?a=1",
    ] {
        let err = load(&format!("[upstream]\nurl = \"{bad}\"\n"), &[]).unwrap_err();
        assert!(err.to_string().starts_with("upstream.url:"), "{bad}: {err}");
    }
    let ok = load("[upstream]\nurl = \"http://127.0.0.1:9000/\"\n", &[]).unwrap();
    assert_eq!(ok.upstream.url(), "http://127.0.0.1:9000");
}

#[test]
fn an_unreadable_ca_file_is_refused() {
    let err = load("[upstream]\nca_file = \"/nonexistent/ca.pem\"\n", &[]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("upstream.ca_file: cannot read /nonexistent/ca.pem"),
        "{msg}"
    );
}

#[test]
fn a_ca_file_without_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "hello").unwrap();
    let err = load(&format!("[upstream]\nca_file = {:?}\n", path), &[]).unwrap_err();
    assert!(
        err.to_string().contains("holds no PEM certificate"),
        "{err}"
    );
}

#[test]
fn tls_needs_both_files() {
    let err = load("[listen_tls]\ncert_file = \"/x\"\n", &[]).unwrap_err();
    assert!(err.to_string().starts_with("listen_tls.key_file:"), "{err}");
}

#[test]
fn bad_durations_and_formats_are_refused() {
    let err = load("[upstream]\nconnect_timeout = \"soon\"\n", &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("upstream.connect_timeout: \"soon\" is not a duration"),
        "{err}"
    );
    let err = load("[upstream]\nconnect_timeout = \"0s\"\n", &[]).unwrap_err();
    assert!(
        err.to_string().starts_with("upstream.connect_timeout:"),
        "{err}"
    );
    let err = load("[log]\nformat = \"xml\"\n", &[]).unwrap_err();
    assert!(err.to_string().starts_with("log.format:"), "{err}");
}

#[test]
fn extra_redacted_params_add_to_api_key() {
    let c = load("[audit]\nredact_params = [\"token\", \"API_KEY\"]\n", &[]).unwrap();
    assert_eq!(c.audit.redact_params, vec!["api_key", "token"]);
}

#[test]
fn a_redacted_name_without_letters_or_digits_is_refused() {
    let err = load("[audit]\nredact_params = [\"__\"]\n", &[]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("audit.redact_params: `__` has no letters"),
        "{err}"
    );
}

#[test]
fn the_rendered_config_masks_the_token_and_parses_again() {
    let c = load("", &[("SAFEDELETE_ADMIN_TOKEN", "super-secret-token-123")]).unwrap();
    let text = c.render_masked();
    assert!(!text.contains("super-secret-token-123"));
    assert!(text.contains("token = \"***\""));
    let reparsed = Config::parse(&text).unwrap();
    assert_eq!(
        reparsed.upstream.url.as_deref(),
        Some("https://server.smartlead.ai")
    );
    assert!(!format!("{:?}", c.admin.token).contains("super"));
}

#[test]
fn the_example_config_is_valid_and_matches_the_defaults() {
    let text = include_str!("../../config/safedelete.example.toml");
    let example = load(text, &[]).unwrap();
    let defaults = load("", &[]).unwrap();
    assert_eq!(example.render_masked(), defaults.render_masked());
}

#[test]
fn a_non_loopback_admin_listener_needs_a_token() {
    let err = load("[admin]\nlisten = \"0.0.0.0:8081\"\n", &[]).unwrap_err();
    assert!(err.to_string().starts_with("admin.listen:"), "{err}");
    let ok = load(
        "[admin]\nlisten = \"0.0.0.0:8081\"\ntoken = \"0123456789abcdefXYZ\"\n",
        &[],
    );
    assert!(ok.is_ok());
}

#[test]
fn audit_queue_limits_are_bounded() {
    let err = load("[audit]\nqueue_capacity = 9223372036854775807\n", &[]).unwrap_err();
    assert!(err.to_string().contains("queue_capacity"), "{err}");
    let err = load("[audit]\nbatch_max = 100000000\n", &[]).unwrap_err();
    assert!(err.to_string().starts_with("audit.batch_max:"), "{err}");
}

#[test]
fn workers_and_audit_passthrough_are_read_and_checked() {
    let c = load("workers = 3\n[audit]\npassthrough = false\n", &[]).unwrap();
    assert_eq!(c.workers, 3);
    assert!(!c.audit.passthrough);
    let shown = c.render_masked();
    assert!(shown.contains("workers = 3"), "{shown}");
    assert!(shown.contains("passthrough = false"), "{shown}");
    let defaults = load("", &[]).unwrap();
    assert_eq!(defaults.workers, 0, "0 = one per CPU");
    assert!(defaults.audit.passthrough);
    let err = load("workers = 5000\n", &[]).unwrap_err();
    assert!(err.to_string().contains("workers"), "{err}");
}

#[test]
fn a_rule_naming_an_actor_no_actors_entry_defines_is_refused() {
    let alice = format!(
        "[[actors]]\nname = \"alice\"\nkey_sha256 = \"{}\"\n\n",
        "ab".repeat(32)
    );
    let rule = "[[policy.rules]]\nname = \"freeze\"\naction = \"deny\"\nactors = [\"alcie\"]\n";
    let err = load(&format!("{alice}{rule}"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("policy.rules[0] (\"freeze\").actors: \"alcie\" is not an actor")
            && err.ends_with("[[actors]] defines alice"),
        "{err}"
    );
    let ok = load(&format!("{alice}{}", rule.replace("alcie", "alice")), &[]).unwrap();
    assert_eq!(
        ok.policy.policy.rules()[0].actors.as_deref(),
        Some(&["alice".to_string()][..])
    );
}

#[test]
fn a_bad_duration_names_the_key_and_shows_how_to_write_one() {
    let keys = [
        ("", "shutdown_grace"),
        ("", "request_head_timeout"),
        ("", "body_idle_timeout"),
        ("[upstream]\n", "upstream.connect_timeout"),
        ("[upstream]\n", "upstream.first_byte_timeout"),
        ("[upstream]\n", "upstream.idle_timeout"),
        ("[guard]\n", "guard.snapshot_budget"),
        ("[guard]\n", "guard.answer_within"),
        ("[guard]\n", "guard.reuse_snapshot_within"),
    ];
    let bad = [
        ("\"30\"", "\"30\""),
        ("\"5 minutes please\"", "\"5 minutes please\""),
        ("30", "30"),
    ];
    for (table, key) in keys {
        let name = key.rsplit('.').next().unwrap();
        for (written, shown) in bad {
            let err = load(&format!("{table}{name} = {written}\n"), &[])
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                format!(
                    "{key}: {shown} is not a duration; write it with a unit, for example \"30s\" or \"5m\""
                )
            );
        }
        let ok = load(&format!("{table}{name} = \"1m 30s\"\n"), &[]).unwrap();
        assert!(ok.render_masked().contains(&format!("{name} = \"1m 30s\"")));
    }
}

#[test]
fn a_log_filter_that_would_silence_the_logs_is_refused_with_an_example() {
    const HOW: &str =
        "; write a level such as \"info\", or per-module directives such as \"safedelete=debug,info\"";
    let cases = [
        (
            "safedelete=verbose",
            "\"safedelete=verbose\" is not a log filter (",
        ),
        ("=info", "\"=info\" is not a log filter ("),
        ("", "is empty, which would silence every log line"),
        (
            "inf",
            "\"inf\" would be read as a module name, not a level (did you mean \"info\"?)",
        ),
        ("debugg", "(did you mean \"debug\"?)"),
        ("warn, info", "\"warn, info\" has a space in \" info\""),
    ];
    for (filter, problem) in cases {
        let err = load("", &[("SAFEDELETE_LOG", filter)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("SAFEDELETE_LOG: ") && err.contains(problem) && err.ends_with(HOW),
            "{filter:?}: {err}"
        );
    }
    let err = load("[log]\nfilter = \"inf\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("log.filter: \"inf\""), "{err}");
    for ok in [
        "info",
        "WARN",
        "safedelete=debug,info",
        "warn,safedelete::server=info",
        "hyper,info",
    ] {
        let c = load("", &[("SAFEDELETE_LOG", ok)]).unwrap();
        assert_eq!(c.log.filter.as_str(), ok);
    }
}

#[test]
fn an_unknown_safedelete_variable_is_reported_with_the_closest_known_name() {
    let env: std::collections::HashMap<String, String> = [
        ("SAFEDELETE_UPSTREM", "http://127.0.0.1:9"),
        ("SAFEDELETE_LOGFORMAT", "json"),
        ("SAFEDELETE_EVERYTHING", "1"),
        ("SAFEDELETE_LOG", "info"),
        ("HOME", "/root"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let found = unknown_variables(&env);
    let names: Vec<(&str, Option<&str>)> =
        found.iter().map(|u| (u.name.as_str(), u.closest)).collect();
    assert_eq!(
        names,
        [
            ("SAFEDELETE_EVERYTHING", None),
            ("SAFEDELETE_LOGFORMAT", Some("SAFEDELETE_LOG_FORMAT")),
            ("SAFEDELETE_UPSTREM", Some("SAFEDELETE_UPSTREAM")),
        ]
    );
    let shown = found[2].to_string();
    assert_eq!(
        shown,
        "environment variable SAFEDELETE_UPSTREM is not one safedelete reads, so it is ignored; \
         did you mean SAFEDELETE_UPSTREAM?"
    );
    assert!(!shown.contains("127.0.0.1"), "values are never shown");
    assert!(found[0].to_string().contains("(known: SAFEDELETE_LISTEN, "));
    assert!(unknown_variables(&NoEnv).is_empty());
}

#[test]
fn every_safedelete_variable_the_docs_and_scripts_use_is_known() {
    let sources = [
        include_str!("../../README.md"),
        include_str!("../../config/safedelete.example.toml"),
        include_str!("../../Dockerfile"),
        include_str!("../../bench/forward.sh"),
        include_str!("../../bench/snapshot.sh"),
        include_str!("../../bench/instructions.sh"),
        include_str!("../../bench/audit.sh"),
        include_str!("../../.ci/run"),
        include_str!("../../tests/gateway_keys.rs"),
    ];
    for text in sources {
        for (at, _) in text.match_indices(var::PREFIX) {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // "SAFEDELETE_*", the family; the README's example of the warning.
            if name == var::PREFIX || name == "SAFEDELETE_UPSTREM" {
                continue;
            }
            assert!(
                var::KNOWN.contains(&name.as_str()),
                "{name} is not in env::var::KNOWN"
            );
        }
    }
}

#[test]
fn changed_keys_name_each_setting_that_differs_and_never_show_a_secret() {
    let before = load("", &[]).unwrap();
    assert!(before.changed_keys(&before.clone()).is_empty());
    let after = load(
        "listen = \"127.0.0.1:7000\"\n\
         [upstream]\nurl = \"http://127.0.0.1:9\"\n\
         [admin]\ntoken = \"a-brand-new-admin-token\"\n\
         [[actors]]\nname = \"alice\"\nkey_sha256 = \"abababababababababababababababababababababababababababababababab\"\n\
         [[policy.rules]]\nname = \"freeze\"\naction = \"deny\"\n\
         [log]\nfilter = \"warn\"\n",
        &[],
    )
    .unwrap();
    let changed = before.changed_keys(&after);
    assert_eq!(
        changed,
        [
            "listen",
            "upstream.url",
            "admin.token",
            "policy",
            "actors",
            "log.filter"
        ]
    );
    assert_eq!(after.changed_keys(&before), changed);
    // A different token of the same length is still a change.
    let other_token = load("[admin]\ntoken = \"a-brand-new-admin-tokeN\"\n", &[]).unwrap();
    let same_token = load("[admin]\ntoken = \"a-brand-new-admin-token\"\n", &[]).unwrap();
    assert_eq!(other_token.changed_keys(&same_token), ["admin.token"]);
    assert!(!format!("{changed:?}").contains("a-brand-new"));
    // Only the policy's meaning counts, not how the file spells it.
    let spelled = load("[policy]\ndefault = \"ARCHIVE\" # the default\n", &[]).unwrap();
    assert!(before.changed_keys(&spelled).is_empty());
}

#[test]
fn reload_refuses_a_missing_or_empty_file_and_a_gateway_started_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("safedelete.toml");
    std::fs::write(
        &path,
        "[[policy.rules]]\nname = \"freeze\"\naction = \"deny\"\n",
    )
    .unwrap();
    let running = Config::load(Some(&path), &NoEnv).unwrap();
    assert_eq!(
        running.reload(&NoEnv).unwrap().policy.policy.rules().len(),
        1
    );
    for empty in [
        "",
        "  \n\n",
        "# every rule commented out\n# [[policy.rules]]\n",
    ] {
        std::fs::write(&path, empty).unwrap();
        let err = running.reload(&NoEnv).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "config file {} has no settings (it is empty or holds only comments); \
                 refusing it rather than falling back to the built-in defaults",
                path.display()
            ),
            "{empty:?}"
        );
    }
    std::fs::remove_file(&path).unwrap();
    let err = running.reload(&NoEnv).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot read config file {}: ", path.display()))
            && err.contains("No such file"),
        "{err}"
    );
    let defaults = load("", &[]).unwrap();
    let err = defaults.reload(&NoEnv).unwrap_err().to_string();
    assert!(err.starts_with("no config file to reload"), "{err}");
}

#[test]
fn a_client_never_waits_longer_than_the_snapshot_budget() {
    let defaults = load("", &[]).unwrap().guard;
    assert_eq!(defaults.answer_within, Duration::from_secs(30));
    assert_eq!(defaults.reuse_snapshot_within, Duration::from_secs(15 * 60));
    // A budget shorter than 30 s bounds the default wait by itself.
    let short = load("[guard]\nsnapshot_budget = \"2s\"\n", &[]).unwrap();
    assert_eq!(short.guard.answer_within, Duration::from_secs(2));
    let err = load(
        "[guard]\nsnapshot_budget = \"10s\"\nanswer_within = \"1m\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("guard.answer_within: 1m is longer than guard.snapshot_budget (10s)"),
        "{err}"
    );
    let zero = load("[guard]\nanswer_within = \"0s\"\n", &[]).unwrap_err();
    assert!(
        zero.to_string()
            .starts_with("guard.answer_within: must be greater than zero"),
        "{zero}"
    );
    let never = load("[guard]\nreuse_snapshot_within = \"0s\"\n", &[]).unwrap();
    assert!(never.guard.reuse_snapshot_within.is_zero());
}

#[test]
fn check_config_shows_operation_defaults_and_rule_operations_that_differ_from_the_built_ins() {
    let policy_lines = |c: &Config| -> Vec<String> {
        c.render_masked()
            .lines()
            .filter(|l| l.starts_with("# policy"))
            .map(str::to_string)
            .collect()
    };
    let old = "[[policy.rules]]\nname = \"keep\"\naction = \"deny\"\ncampaign_ids = [1]\n";
    let c = load(old, &[]).unwrap();
    let revision = c.policy.policy.revision().to_string();
    // A policy without the new keys shows what it always did.
    assert_eq!(
        policy_lines(&c),
        [format!(
            "# policy: default archive, 1 rule(s), revision {revision}"
        )]
    );
    let explicit = load(
        &format!(
            "{old}operations = [\"campaign.delete\"]\n\n\
             [policy.defaults]\n\"lead.delete\" = \"allow\"\n"
        ),
        &[],
    )
    .unwrap();
    assert_eq!(policy_lines(&explicit), policy_lines(&c));

    let c = load(
        &format!(
            "{old}\n[[policy.rules]]\nname = \"leads\"\naction = \"pause\"\n\
             operations = [\"campaign.lead.*\", \"campaign.stop\"]\n\n\
             [policy.defaults]\n\"email_account.delete\" = \"deny\"\n\
             \"lead.delete\" = \"allow\"\n\"campaign.lead.delete\" = \"pause\"\n"
        ),
        &[],
    );
    let err = c.unwrap_err().to_string();
    assert!(
        err.starts_with("policy.rules[1] (\"leads\").action: \"pause\" is not an action of campaign.lead.unsubscribe"),
        "{err}"
    );
    let c = load(
        &format!(
            "{old}\n[[policy.rules]]\nname = \"leads\"\naction = \"pause\"\n\
             operations = [\"campaign.lead.delete\", \"campaign.stop\"]\n\n\
             [policy.defaults]\n\"email_account.delete\" = \"deny\"\n\
             \"lead.delete\" = \"allow\"\n\"campaign.lead.delete\" = \"pause\"\n"
        ),
        &[],
    )
    .unwrap();
    let revision = c.policy.policy.revision();
    assert_eq!(
        policy_lines(&c),
        [
            format!("# policy: default archive, 2 rule(s), revision {revision}"),
            "# policy default: campaign.lead.delete pause".to_string(),
            "# policy default: email_account.delete deny".to_string(),
            "# policy rule: leads (operations campaign.stop, campaign.lead.delete)".to_string(),
        ]
    );
    // Still a valid config once printed.
    Config::parse(&c.render_masked()).unwrap();
}

#[test]
fn accounts_come_from_the_environment_and_files_and_never_show_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("client-b.key");
    std::fs::write(&file, "sl-key-of-client-b\n").unwrap();
    let text = format!(
        "[identity]\nmode = \"gateway_keys\"\nrate_limit = \"30/min\"\n\
         [smartlead]\nrate_limit = \"60/min\"\n\
         [[smartlead.accounts]]\nname = \"client-a\"\napi_key_env = \"CLIENT_A_KEY\"\nrate_limit = \"120/min\"\n\
         [[smartlead.accounts]]\nname = \"client-b\"\napi_key_file = {:?}\n",
        file.display().to_string()
    );
    let c = load(
        &text,
        &[
            ("SAFEDELETE_SMARTLEAD_API_KEY", "sl-default-key"),
            ("CLIENT_A_KEY", "sl-key-of-client-a"),
        ],
    )
    .unwrap();
    assert_eq!(c.identity.mode, IdentityMode::GatewayKeys);
    assert_eq!(c.smartlead.names(), ["default", "client-a", "client-b"]);
    let a = c.smartlead.account("client-a").unwrap();
    assert_eq!(a.api_key.expose(), "sl-key-of-client-a");
    assert_eq!(a.rate_limit.unwrap().to_string(), "120/min");
    let b = c.smartlead.account("client-b").unwrap();
    assert_eq!(
        b.api_key.expose(),
        "sl-key-of-client-b",
        "the file's newline is not part of the key"
    );
    assert_eq!(
        b.rate_limit.unwrap().to_string(),
        "60/min",
        "the shared limit"
    );
    let shown = c.render_masked();
    for key in ["sl-default-key", "sl-key-of-client-a", "sl-key-of-client-b"] {
        assert!(!shown.contains(key), "{shown}");
        assert!(!format!("{c:?}").contains(key));
    }
    assert!(
        shown.contains(
            "# account: client-a (key from environment variable CLIENT_A_KEY, rate limit 120/min)"
        ),
        "{shown}"
    );
    assert!(shown.contains("mode = \"gateway_keys\""), "{shown}");
}

#[test]
fn account_mistakes_name_the_key_and_say_what_to_do() {
    /// Config text, environment, the key the error starts with, what it says.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "[identity]\nmode = \"gateway_keys\"\n",
            &[],
            "identity.mode:",
            "SAFEDELETE_SMARTLEAD_API_KEY",
        ),
        (
            "",
            &[("SAFEDELETE_IDENTITY_MODE", "gateway-keys")],
            "SAFEDELETE_IDENTITY_MODE:",
            "\"gateway_keys\"",
        ),
        (
            "[[smartlead.accounts]]\nname = \"a\"\napi_key_env = \"NOT_SET\"\n",
            &[],
            "smartlead.accounts[0].api_key_env:",
            "NOT_SET is not set",
        ),
        (
            "[[smartlead.accounts]]\nname = \"a\"\n",
            &[],
            "smartlead.accounts[0].api_key_env:",
            "never goes in the file",
        ),
        (
            "[[smartlead.accounts]]\nname = \"a\"\napi_key_env = \"K\"\napi_key_file = \"/k\"\n",
            &[("K", "x")],
            "smartlead.accounts[0].api_key_env:",
            "not both",
        ),
        (
            "[[smartlead.accounts]]\nname = \"default\"\napi_key_env = \"K\"\n",
            &[("K", "x"), ("SAFEDELETE_SMARTLEAD_API_KEY", "y")],
            "smartlead.accounts[0].name:",
            "defined twice",
        ),
        (
            "[[smartlead.accounts]]\nname = \"has space\"\napi_key_env = \"K\"\n",
            &[("K", "x")],
            "smartlead.accounts[0].name:",
            "for example",
        ),
        (
            "",
            &[("SAFEDELETE_SMARTLEAD_API_KEY", "sdg_abc")],
            "SAFEDELETE_SMARTLEAD_API_KEY:",
            "gateway key",
        ),
        (
            "[smartlead]\nrate_limit = \"60 per minute\"\n",
            &[],
            "smartlead.rate_limit:",
            "\"30/min\"",
        ),
        (
            "[identity]\nrate_limit = \"30/fortnight\"\n",
            &[],
            "identity.rate_limit:",
            "unit of time",
        ),
        (
            "[bypass]\ninterval = \"10ms\"\n",
            &[],
            "bypass.interval:",
            "\"0s\"",
        ),
        (
            "[bypass]\nintervall = \"1m\"\n",
            &[],
            "",
            "unknown field `intervall`",
        ),
        (
            "[[smartlead.accounts]]\nname = \"a\"\napi_key_file = \"/no/such/file\"\n",
            &[],
            "smartlead.accounts[0].api_key_file:",
            "/no/such/file",
        ),
    ];
    for (text, env, key, says) in cases {
        let err = load(text, env).unwrap_err().to_string();
        assert!(err.starts_with(key), "{text:?}: {err}");
        assert!(err.contains(says), "{text:?}: {err}");
        for (name, v) in env.iter() {
            if name.ends_with("API_KEY") {
                assert!(!err.contains(v), "{err} shows a key");
            }
        }
    }
}

#[test]
fn with_gateway_keys_rules_may_name_keys_no_actors_entry_defines() {
    let policy =
        "[[policy.rules]]\nname = \"not alice\"\naction = \"deny\"\nactors = [\"alice\"]\n";
    let err = load(policy, &[]).unwrap_err().to_string();
    assert!(err.contains("is not an actor"), "{err}");
    let c = load(
        &format!("{policy}[identity]\nmode = \"gateway_keys\"\n"),
        &[("SAFEDELETE_SMARTLEAD_API_KEY", "sl-key")],
    );
    assert!(c.is_ok(), "{:?}", c.err());
}

#[test]
fn the_bypass_watch_runs_every_15_minutes_unless_turned_off() {
    assert_eq!(
        load("", &[]).unwrap().bypass.interval,
        Duration::from_secs(900)
    );
    let off = load("[bypass]\ninterval = \"0s\"\n", &[]).unwrap();
    assert!(off.bypass.interval.is_zero());
}

#[test]
fn the_gateway_keys_example_is_valid_with_the_account_key_in_the_environment() {
    let text = include_str!("../../config/gateway-keys.toml");
    let c = load(text, &[("SAFEDELETE_SMARTLEAD_API_KEY", "sl-key")]).unwrap();
    assert_eq!(c.identity.mode, IdentityMode::GatewayKeys);
    assert_eq!(c.smartlead.names(), ["default"]);
    let err = load(text, &[]).unwrap_err().to_string();
    assert!(err.contains("SAFEDELETE_SMARTLEAD_API_KEY"), "{err}");
}

#[test]
fn the_store_is_a_sqlite_path_or_a_postgres_url_with_its_pool() {
    let c = load(
        "[database]\nurl = \"postgres://gw:pw@db.internal:5432/safedelete?sslmode=verify-full&sslrootcert=/etc/ca.pem\"\n\
         pool_size = 20\nacquire_timeout = \"2s\"\nstatement_timeout = \"30s\"\n",
        &[],
    )
    .unwrap();
    assert!(c.database.store.is_postgres());
    assert_eq!(c.database.pool.max_connections, 20);
    assert_eq!(c.database.pool.acquire_timeout, Duration::from_secs(2));
    assert_eq!(c.database.pool.statement_timeout, Duration::from_secs(30));
    assert_eq!(
        c.database.pool.idle_timeout,
        crate::db::PoolSettings::default().idle_timeout
    );
    let shown = c.render_masked();
    assert!(
        shown.contains("url = \"postgres://gw:REDACTED@db.internal:5432/safedelete"),
        "{shown}"
    );
    assert!(!shown.contains(":pw@"), "{shown}");

    let c = load("[database]\nurl = \"sqlite:///var/lib/sd.db\"\n", &[]).unwrap();
    assert_eq!(c.database.store, Location::Sqlite("/var/lib/sd.db".into()));
    let c = load(
        "[database]\npath = \"a.db\"\n",
        &[("SAFEDELETE_DATABASE", "postgres://127.0.0.1/sd")],
    )
    .unwrap();
    assert!(c.database.store.is_postgres(), "the variable wins");
}

#[test]
fn a_wrong_store_setting_names_its_key_and_what_to_write() {
    for (text, env, key, says) in [
        (
            "[database]\nurl = \"x.db\"\npath = \"y.db\"\n",
            None,
            "database.url",
            "keep one",
        ),
        (
            "[database]\nurl = \"mysql://h/db\"\n",
            None,
            "database.url",
            "postgres://",
        ),
        (
            "[database]\nurl = \"postgres://u:hunter2@h/db?sslmode=verify-full\"\n",
            None,
            "database.url",
            "sslrootcert",
        ),
        (
            "[database]\npool_size = 0\n",
            None,
            "database.pool_size",
            "1 to 1000",
        ),
        (
            "[database]\nacquire_timeout = \"5\"\n",
            None,
            "database.acquire_timeout",
            "unit",
        ),
        ("", Some("postgres://h"), "SAFEDELETE_DATABASE", "/DATABASE"),
        (
            "[database]\npoolsize = 3\n",
            None,
            "poolsize",
            "unknown field",
        ),
    ] {
        let env: Vec<(&str, &str)> = env
            .map(|v| ("SAFEDELETE_DATABASE", v))
            .into_iter()
            .collect();
        let err = load(text, &env).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(says), "{text}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
