use super::*;
use crate::guard::glob::matches as glob_match;

mod operations;

#[derive(Deserialize)]
struct Wrapper {
    #[serde(default)]
    policy: PolicyFile,
}

fn parse(toml_text: &str) -> Result<Policy, PolicyError> {
    let w: Wrapper = toml::from_str(toml_text).expect("test TOML parses");
    Policy::from_file(&w.policy)
}

fn policy(toml_text: &str) -> Policy {
    parse(toml_text).expect("test policy is valid")
}

fn error(toml_text: &str) -> String {
    parse(toml_text)
        .expect_err("test policy is invalid")
        .to_string()
}

fn facts(campaign_id: u64) -> Facts<'static> {
    Facts {
        campaign_id: Some(campaign_id),
        name: Some("Q1 Outreach"),
        status: Some("ACTIVE"),
        client_id: Some(7),
        client_id_known: true,
        ..Facts::new(Op::CampaignDelete, "alice")
    }
}

/// A one-rule deny policy, for table tests on a single match field.
fn deny_when(match_fields: &str) -> Policy {
    policy(&format!(
        "[[policy.rules]]\nname = \"r\"\naction = \"deny\"\n{match_fields}\n"
    ))
}

fn decided_by_rule(p: &Policy, f: &Facts<'_>) -> bool {
    evaluate(p, f).rule.is_some()
}

#[test]
fn each_match_field_matches_only_what_it_lists() {
    let base = facts(101);
    let cases: &[(&str, Facts<'static>, bool)] = &[
        ("campaign_ids = [101, 102]", base.clone(), true),
        ("campaign_ids = [102]", base.clone(), false),
        ("campaign_name = \"Q1 *\"", base.clone(), true),
        ("campaign_name = \"q1 outreach\"", base.clone(), true),
        ("campaign_name = \"Q? Outreach\"", base.clone(), true),
        ("campaign_name = \"Q? Out\"", base.clone(), false),
        ("campaign_name = \"*reach\"", base.clone(), true),
        (
            "campaign_name = \"*\"",
            Facts {
                name: Some(""),
                ..base.clone()
            },
            true,
        ),
        (
            "campaign_name = \"?\"",
            Facts {
                name: Some(""),
                ..base.clone()
            },
            false,
        ),
        ("campaign_name = \"Q2 *\"", base.clone(), false),
        (
            "campaign_name = \"*\"",
            Facts {
                name: None,
                ..base.clone()
            },
            false,
        ),
        ("statuses = [\"active\", \"PAUSED\"]", base.clone(), true),
        ("statuses = [\"PAUSED\"]", base.clone(), false),
        (
            "statuses = [\"PAUSED\"]",
            Facts {
                status: Some("paused"),
                ..base.clone()
            },
            true,
        ),
        (
            "statuses = [\"ACTIVE\"]",
            Facts {
                status: None,
                ..base.clone()
            },
            false,
        ),
        ("client_ids = [7]", base.clone(), true),
        ("client_ids = [8]", base.clone(), false),
        (
            "client_ids = [7]",
            Facts {
                client_id: None,
                ..base.clone()
            },
            false,
        ),
        ("actors = [\"alice\", \"unknown\"]", base.clone(), true),
        (
            "actors = [\"unknown\"]",
            Facts {
                actor: "unknown",
                ..base.clone()
            },
            true,
        ),
        ("actors = [\"bob\"]", base.clone(), false),
        ("actors = [\"Alice\"]", base.clone(), false),
        ("", base.clone(), true),
        (
            "campaign_ids = [101]\nstatuses = [\"ACTIVE\"]\nclient_ids = [7]",
            base.clone(),
            true,
        ),
        (
            "campaign_ids = [101]\nstatuses = [\"PAUSED\"]",
            base.clone(),
            false,
        ),
    ];
    for (fields, f, expected) in cases {
        let p = deny_when(fields);
        assert_eq!(
            decided_by_rule(&p, f),
            *expected,
            "rule {fields:?} with {f:?}"
        );
    }
}

#[test]
fn glob_handles_stars_and_unicode_case() {
    let cases = [
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("**", "anything", true),
        ("*a", "banana", true),
        ("*an*an*", "banana", true),
        ("ÉTÉ *", "été 2024", true),
        ("a?c", "abbc", false),
    ];
    for (pattern, text, expected) in cases {
        assert_eq!(
            glob_match(pattern, text),
            expected,
            "{pattern:?} vs {text:?}"
        );
    }
}

#[test]
fn the_first_matching_enforce_rule_decides() {
    let p = policy(
        r#"
        [[policy.rules]]
        name = "paused-ok"
        action = "allow"
        statuses = ["PAUSED"]

        [[policy.rules]]
        name = "client-7"
        action = "deny"
        client_ids = [7]

        [[policy.rules]]
        name = "everything"
        action = "allow"
        "#,
    );
    let d = evaluate(&p, &facts(1));
    assert_eq!(
        (d.action, d.rule.as_deref()),
        (Action::Deny, Some("client-7"))
    );
    let paused = Facts {
        status: Some("PAUSED"),
        ..facts(1)
    };
    assert_eq!(evaluate(&p, &paused).rule.as_deref(), Some("paused-ok"));
    let other = Facts {
        client_id: Some(8),
        ..facts(1)
    };
    assert_eq!(evaluate(&p, &other).rule.as_deref(), Some("everything"));
}

#[test]
fn shadow_rules_are_recorded_but_never_decide() {
    let p = policy(
        r#"
        [[policy.rules]]
        name = "try-deny"
        action = "deny"
        mode = "shadow"

        [[policy.rules]]
        name = "try-allow-other"
        action = "allow"
        mode = "shadow"
        client_ids = [99]

        [[policy.rules]]
        name = "try-allow"
        action = "allow"
        mode = "shadow"

        [[policy.rules]]
        name = "keep-101"
        action = "archive"
        campaign_ids = [101]

        [[policy.rules]]
        name = "after"
        action = "deny"
        mode = "shadow"
        "#,
    );
    let d = evaluate(&p, &facts(101));
    assert_eq!(d.action, Action::Archive);
    assert_eq!(d.rule.as_deref(), Some("keep-101"));
    assert_eq!(
        d.would,
        vec![
            ShadowOutcome {
                rule: "try-deny".into(),
                action: Action::Deny
            },
            ShadowOutcome {
                rule: "try-allow".into(),
                action: Action::Allow
            },
        ]
    );
    assert_eq!(
        d.would_action().as_deref(),
        Some("try-deny=deny, try-allow=allow")
    );

    // No enforce rule matches: the default decides, and the shadow rule after
    // `keep-101` is now reached.
    let d = evaluate(&p, &facts(5));
    assert_eq!((d.action, d.rule.as_deref()), (Action::Archive, None));
    assert_eq!(
        d.would_action().as_deref(),
        Some("try-deny=deny, try-allow=allow, after=deny")
    );
}

#[test]
fn no_shadow_match_means_no_would_action() {
    let d = evaluate(&Policy::builtin(), &facts(1));
    assert!(d.would.is_empty());
    assert_eq!(d.would_action(), None);
}

#[test]
fn the_default_decides_when_no_rule_matches() {
    let cases = [
        ("", Action::Archive, true),
        ("[policy]\ndefault = \"allow\"", Action::Allow, true),
        ("[policy]\ndefault = \"deny\"", Action::Deny, false),
        ("[policy]\ndefault = \"ARCHIVE\"", Action::Archive, true),
    ];
    for (text, action, snapshot) in cases {
        let p = policy(text);
        assert_eq!(p.default_action(), action, "{text:?}");
        let d = evaluate(&p, &facts(1));
        assert_eq!(d.action, action, "{text:?}");
        assert_eq!(d.rule, None);
        assert_eq!(d.snapshot_required, snapshot, "{text:?}");
        assert!(!d.stop_first);
        assert_eq!(d.revision, p.revision());
    }
    let builtin = Policy::builtin();
    assert_eq!(builtin.default_action(), Action::Archive);
    assert!(builtin.rules().is_empty());
    assert_eq!(builtin.revision(), policy("").revision());
}

#[test]
fn snapshot_off_and_stop_first_reach_the_decision() {
    let cases = [
        ("action = \"allow\"", true, false),
        (
            "action = \"allow\"\nsnapshot = \"off\"\nallow_without_snapshot = true",
            false,
            false,
        ),
        ("action = \"allow\"\nstop_first = true", true, true),
        ("action = \"archive\"\nsnapshot = \"off\"", false, false),
        ("action = \"archive\"\nsnapshot = \"required\"", true, false),
        ("action = \"deny\"", false, false),
        ("action = \"deny\"\nsnapshot = \"off\"", false, false),
    ];
    for (fields, snapshot, stop_first) in cases {
        let p = policy(&format!("[[policy.rules]]\nname = \"r\"\n{fields}\n"));
        let d = evaluate(&p, &facts(1));
        assert_eq!(d.rule.as_deref(), Some("r"));
        assert_eq!(
            (d.snapshot_required, d.stop_first),
            (snapshot, stop_first),
            "{fields:?}"
        );
    }
}

#[test]
fn invalid_policies_are_rejected_naming_the_key() {
    let rule = |body: &str| {
        format!("[[policy.rules]]\nname = \"ok\"\naction = \"allow\"\n\n[[policy.rules]]\n{body}\n")
    };
    let cases = [
        ("[policy]\ndefault = \"delete\"".to_string(), "policy.default: \"delete\" is not an action (use allow, archive or deny)"),
        (rule("name = \"foo\"\naction = \"delete\""), "policy.rules[1] (\"foo\").action: \"delete\" is not an action (use allow, archive or deny)"),
        (rule("name = \"foo\"\naction = \"deny\"\nmode = \"dry-run\""), "policy.rules[1] (\"foo\").mode: \"dry-run\" is not a mode"),
        (rule("name = \"foo\"\naction = \"allow\"\nsnapshot = \"maybe\""), "policy.rules[1] (\"foo\").snapshot: \"maybe\" is not a snapshot mode"),
        (rule("name = \"  \"\naction = \"deny\""), "policy.rules[1].name: must not be empty"),
        (rule("name = \"ok\"\naction = \"deny\""), "policy.rules[1] (\"ok\").name: is used by an earlier rule"),
        (rule("name = \"foo\"\naction = \"deny\"\ncampaign_ids = []"), "policy.rules[1] (\"foo\").campaign_ids: is empty"),
        (rule("name = \"foo\"\naction = \"deny\"\nclient_ids = []"), "policy.rules[1] (\"foo\").client_ids: is empty"),
        (rule("name = \"foo\"\naction = \"deny\"\nstatuses = []"), "policy.rules[1] (\"foo\").statuses: is empty"),
        (rule("name = \"foo\"\naction = \"deny\"\nstatuses = [\"\"]"), "policy.rules[1] (\"foo\").statuses: entries must not be empty"),
        (rule("name = \"foo\"\naction = \"deny\"\nactors = []"), "policy.rules[1] (\"foo\").actors: is empty"),
        (rule("name = \"foo\"\naction = \"deny\"\ncampaign_name = \"\""), "policy.rules[1] (\"foo\").campaign_name: must not be empty"),
        (rule("name = \"foo\"\naction = \"archive\"\nstop_first = true"), "policy.rules[1] (\"foo\").stop_first: only applies to allow rules"),
    ];
    for (text, expected) in cases {
        let message = error(&text);
        assert!(
            message.starts_with(expected),
            "got {message:?}, want {expected:?}"
        );
    }
}

#[test]
fn unknown_keys_and_the_old_name_glob_spelling_fail_to_parse() {
    let unknown = "[[policy.rules]]\nname = \"a\"\naction = \"deny\"\ncampaign = 1\n";
    assert!(toml::from_str::<Wrapper>(unknown).is_err());
    let missing_action = "[[policy.rules]]\nname = \"a\"\n";
    assert!(toml::from_str::<Wrapper>(missing_action).is_err());
    // The campaign-name glob is `campaign_name`: a second `name` is a TOML error.
    let glob_as_name = "[[policy.rules]]\nname = \"a\"\naction = \"deny\"\nname = \"Q1 *\"\n";
    assert!(toml::from_str::<Wrapper>(glob_as_name).is_err());
    let glob = "[[policy.rules]]\nname = \"a\"\naction = \"deny\"\ncampaign_name = \"Q1 *\"\n";
    let p = policy(glob);
    let rule = &p.rules()[0];
    assert_eq!(
        (rule.name.as_str(), rule.campaign_name.as_deref()),
        ("a", Some("Q1 *"))
    );
}

const BASE: &str = r#"
[policy]
default = "archive"

[[policy.rules]]
name = "protect"
action = "deny"
campaign_ids = [101, 102]
statuses = ["ACTIVE", "PAUSED"]

[[policy.rules]]
name = "old"
action = "allow"
campaign_name = "Old *"
"#;

#[test]
fn the_revision_ignores_formatting_but_not_meaning() {
    let base = policy(BASE).revision().to_string();
    assert_eq!(base.len(), 64);
    assert!(base
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

    let same = [
        // Comments, whitespace, key order, list order, duplicates, case of
        // case-insensitive values, explicit defaults.
        r#"
        # protect key campaigns
        [policy]
        [[policy.rules]]
        statuses = ["paused", "ACTIVE", "ACTIVE"]
        campaign_ids = [102,101]
        action = "deny"
        name = "protect"
        mode = "enforce"
        snapshot = "off"   # ignored for deny

        [[policy.rules]]
        action = "allow"
        name = "old"
        campaign_name = "OLD *"
        stop_first = false
        snapshot = "required"
        "#,
    ];
    for text in same {
        assert_eq!(policy(text).revision(), base, "{text}");
    }

    let different = [
        BASE.replace("default = \"archive\"", "default = \"allow\""),
        BASE.replace("action = \"deny\"", "action = \"archive\""),
        BASE.replace("[101, 102]", "[101, 103]"),
        BASE.replace("\"PAUSED\"]", "\"PAUSED\", \"DRAFTED\"]"),
        BASE.replace("name = \"old\"", "name = \"older\""),
        BASE.replace("campaign_name = \"Old *\"", "campaign_name = \"Old ?\""),
        BASE.replace(
            "campaign_name = \"Old *\"",
            "campaign_name = \"Old *\"\nmode = \"shadow\"",
        ),
        BASE.replace(
            "campaign_name = \"Old *\"",
            "campaign_name = \"Old *\"\nsnapshot = \"off\"\nallow_without_snapshot = true",
        ),
        BASE.replace(
            "campaign_name = \"Old *\"",
            "campaign_name = \"Old *\"\nstop_first = true",
        ),
        BASE.replace(
            "campaign_name = \"Old *\"",
            "campaign_name = \"Old *\"\nactors = [\"alice\"]",
        ),
        // Same rules, swapped order.
        r#"
        [[policy.rules]]
        name = "old"
        action = "allow"
        campaign_name = "Old *"

        [[policy.rules]]
        name = "protect"
        action = "deny"
        campaign_ids = [101, 102]
        statuses = ["ACTIVE", "PAUSED"]
        "#
        .to_string(),
    ];
    for text in &different {
        assert_ne!(policy(text).revision(), base, "{text}");
    }
}

#[test]
fn explain_names_the_deciding_rule_and_the_first_failing_field() {
    let p = policy(
        r#"
        [[policy.rules]]
        name = "watch"
        action = "deny"
        mode = "shadow"
        actors = ["alice"]

        [[policy.rules]]
        name = "active-only"
        action = "allow"
        statuses = ["ACTIVE"]
        client_ids = [8]

        [[policy.rules]]
        name = "protect"
        action = "deny"
        campaign_ids = [101, 102]
        campaign_name = "Q1 *"

        [[policy.rules]]
        name = "rest"
        action = "allow"
        "#,
    );
    let paused = Facts {
        status: Some("PAUSED"),
        ..facts(101)
    };
    let text = explain(&p, &paused);
    let expected = format!(
        "rule 1 `watch` (deny, shadow): matches — actor alice in [alice]\n\
         rule 2 `active-only` (allow, enforce): does not match — status PAUSED not in [ACTIVE]\n\
         rule 3 `protect` (deny, enforce): matches — campaign_id 101 in [101, 102]; name \"Q1 Outreach\" matches \"Q1 *\"\n\
         rule 4 `rest` (allow, enforce): (not reached)\n\
         decision: deny by rule `protect`\n\
         shadow: rule `watch` would deny\n\
         policy revision: {}\n",
        p.revision()
    );
    assert_eq!(text, expected);

    let nameless = Facts {
        campaign_id: Some(5),
        status: Some("ACTIVE"),
        ..Facts::new(Op::CampaignDelete, "bob")
    };
    let text = explain(&p, &nameless);
    assert!(
        text.contains("rule 1 `watch` (deny, shadow): does not match — actor bob not in [alice]\n"),
        "{text}"
    );
    assert!(text.contains("rule 2 `active-only` (allow, enforce): does not match — campaign has no client_id, so not in [8]\n"), "{text}");
    assert!(
        text.contains(
            "rule 3 `protect` (deny, enforce): does not match — campaign_id 5 not in [101, 102]\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "rule 4 `rest` (allow, enforce): matches — no match fields, so every campaign\n"
        ),
        "{text}"
    );
    assert!(text.contains("decision: allow by rule `rest`\n"), "{text}");
    assert!(!text.contains("shadow:"), "{text}");
}

#[test]
fn explain_reports_the_default() {
    let p = policy("[policy]\ndefault = \"deny\"");
    let text = explain(&p, &facts(1));
    assert_eq!(
        text,
        format!(
            "decision: deny by the default\npolicy revision: {}\n",
            p.revision()
        )
    );
}

#[test]
fn decisions_serialize_with_snake_case_actions() {
    let d = evaluate(&Policy::builtin(), &facts(1));
    let json = serde_json::to_value(&d).expect("decision serializes");
    assert_eq!(json["action"], "archive");
    assert_eq!(json["rule"], serde_json::Value::Null);
    assert_eq!(Action::Deny.as_str(), "deny");
}

#[test]
fn a_status_smartlead_does_not_have_is_refused_naming_the_valid_ones() {
    let err = error(
        "[[policy.rules]]\nname = \"r\"\naction = \"deny\"\nstatuses = [\"ACTIVE\", \"activ\"]\n",
    );
    assert_eq!(
        err,
        "policy.rules[0] (\"r\").statuses: \"activ\" is not a SmartLead campaign status \
         (use DRAFTED, ACTIVE, PAUSED, STOPPED, COMPLETED or ARCHIVED, in any case)"
    );
    for typo in ["DRAFT", "RUNNING", "START", "DELETED"] {
        let err = error(&format!(
            "[[policy.rules]]\nname = \"r\"\naction = \"deny\"\nstatuses = [{typo:?}]\n"
        ));
        assert!(err.contains("is not a SmartLead campaign status"), "{err}");
    }
    // Every status SmartLead reports, and ARCHIVED (which the gateway sets),
    // in any case.
    let p = deny_when(
        "statuses = [\"drafted\", \"Active\", \"PAUSED\", \"stopped\", \"completed\", \"archived\"]",
    );
    for status in CAMPAIGN_STATUSES {
        let f = Facts {
            status: Some(status),
            ..facts(1)
        };
        assert!(decided_by_rule(&p, &f), "{status}");
    }
}

#[test]
fn a_rule_naming_an_actor_that_is_not_defined_is_refused_listing_the_defined_ones() {
    let p = policy(
        "[[policy.rules]]\nname = \"ok\"\naction = \"allow\"\nactors = [\"alice\", \"unknown\"]\n\n\
         [[policy.rules]]\nname = \"freeze\"\naction = \"deny\"\nactors = [\"bob\", \"alise\"]\n",
    );
    let err = p
        .check_actors(&["bob", "alice"])
        .expect_err("alise is not defined")
        .to_string();
    assert_eq!(
        err,
        "policy.rules[1] (\"freeze\").actors: \"alise\" is not an actor: name one from \
         [[actors]] or \"unknown\" (keys not listed there); [[actors]] defines alice, bob"
    );
    let err = p.check_actors(&[]).unwrap_err().to_string();
    assert!(
        err.starts_with("policy.rules[0] (\"ok\").actors: \"alice\" is not an actor")
            && err.ends_with("no [[actors]] are defined"),
        "{err}"
    );
    p.check_actors(&["alice", "bob", "alise"])
        .expect("every named actor is defined");
    policy("[[policy.rules]]\nname = \"r\"\naction = \"deny\"\nactors = [\"unknown\"]\n")
        .check_actors(&[])
        .expect("`unknown` needs no [[actors]] entry");
}

#[test]
fn an_allow_rule_without_a_snapshot_must_say_allow_without_snapshot() {
    let err =
        error("[[policy.rules]]\nname = \"drafts-go\"\naction = \"allow\"\nsnapshot = \"off\"\n");
    assert_eq!(
        err,
        "policy.rules[0] (\"drafts-go\").snapshot: \"off\" on an allow rule deletes the campaign \
         with no copy of its data; if that is really wanted, add allow_without_snapshot = true to \
         the rule, otherwise remove snapshot = \"off\""
    );
    let err = error(
        "[[policy.rules]]\nname = \"r\"\naction = \"allow\"\nsnapshot = \"off\"\nallow_without_snapshot = false\n",
    );
    assert!(err.contains("add allow_without_snapshot = true"), "{err}");
    let p = policy(
        "[[policy.rules]]\nname = \"r\"\naction = \"allow\"\nsnapshot = \"OFF\"\nallow_without_snapshot = true\n",
    );
    assert!(p.rules()[0].allow_without_snapshot);
    assert!(!evaluate(&p, &facts(1)).snapshot_required);
    // Archiving keeps the campaign, so skipping its snapshot needs no confirmation.
    let p = policy("[[policy.rules]]\nname = \"r\"\naction = \"archive\"\nsnapshot = \"off\"\n");
    assert!(!p.rules()[0].allow_without_snapshot);
}

#[test]
fn allow_without_snapshot_where_it_means_nothing_is_refused() {
    let cases = [
        (
            "action = \"allow\"\nallow_without_snapshot = true",
            "only applies to an allow rule with snapshot = \"off\" (this rule takes a snapshot); remove it",
        ),
        (
            "action = \"allow\"\nsnapshot = \"required\"\nallow_without_snapshot = false",
            "(this rule takes a snapshot)",
        ),
        (
            "action = \"archive\"\nsnapshot = \"off\"\nallow_without_snapshot = true",
            "(this rule's action is archive)",
        ),
        (
            "action = \"deny\"\nsnapshot = \"off\"\nallow_without_snapshot = true",
            "(this rule's action is deny)",
        ),
    ];
    for (fields, expected) in cases {
        let err = error(&format!("[[policy.rules]]\nname = \"r\"\n{fields}\n"));
        assert!(
            err.starts_with("policy.rules[0] (\"r\").allow_without_snapshot: ")
                && err.contains(expected),
            "{fields:?}: {err}"
        );
    }
}

#[test]
fn explain_says_when_an_allow_rule_deletes_without_a_snapshot() {
    let p = policy(
        "[[policy.rules]]\nname = \"drafts-go\"\naction = \"allow\"\nsnapshot = \"off\"\n\
         allow_without_snapshot = true\nstatuses = [\"DRAFTED\"]\n",
    );
    let drafted = Facts {
        status: Some("DRAFTED"),
        ..facts(1)
    };
    let text = explain(&p, &drafted);
    assert_eq!(
        text,
        format!(
            "rule 1 `drafts-go` (allow WITHOUT a snapshot (allow_without_snapshot = true), enforce): \
             matches — status DRAFTED in [DRAFTED]\n\
             decision: allow by rule `drafts-go`\n\
             warning: allow WITHOUT a snapshot (allow_without_snapshot = true): the campaign's data \
             is not captured before it is deleted\n\
             policy revision: {}\n",
            p.revision()
        )
    );
    // Not deciding, the rule still shows what it would do; no warning.
    let text = explain(&p, &facts(1));
    assert!(
        text.starts_with("rule 1 `drafts-go` (allow WITHOUT a snapshot"),
        "{text}"
    );
    assert!(!text.contains("warning:"), "{text}");
}

#[test]
fn the_revision_of_an_existing_policy_is_unchanged() {
    // The README's worked example, whose revision is printed there and stored
    // in existing audit trails.
    let p = policy(
        r#"
        [policy]
        default = "archive"

        [[policy.rules]]
        name = "protect-key-accounts"
        action = "deny"
        campaign_ids = [102, 2710262]

        [[policy.rules]]
        name = "ops-lead-cleans-old-drafts"
        action = "allow"
        actors = ["ops-lead"]
        campaign_name = "Old *"
        statuses = ["DRAFTED", "STOPPED"]
        "#,
    );
    assert_eq!(
        p.revision(),
        "8424357d2982324b4b4aa06812a221eba66a3714522c9c762ef9022e537d9aa9"
    );
    // Confirming a snapshot-less allow rule does not change its revision:
    // the rule means the same as before the key existed.
    let with_flag = policy(
        "[[policy.rules]]\nname = \"r\"\naction = \"allow\"\nsnapshot = \"off\"\nallow_without_snapshot = true\n",
    );
    let without_snapshot = Policy::new(
        Action::Archive,
        vec![Rule {
            allow_without_snapshot: false,
            ..with_flag.rules()[0].clone()
        }],
    );
    assert_eq!(with_flag.revision(), without_snapshot.revision());
}
