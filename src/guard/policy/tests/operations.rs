//! The policy over the operations table: `operations`, `[policy.defaults]`,
//! the lead and email-account match fields, and what each means for
//! validation, decisions, `explain` and the revision.

use std::collections::HashSet;

use super::*;

/// Facts of `op` with every fact this module's rules check known.
fn of(op: Op) -> Facts<'static> {
    Facts {
        campaign_id: op.has_campaign().then_some(101),
        name: Some("Q1 Outreach"),
        status: Some("ACTIVE"),
        client_id: Some(7),
        client_id_known: true,
        lead_email: Some("Ann@Example.com"),
        lead_status: Some("INPROGRESS"),
        ..Facts::new(op, "alice")
    }
}

fn rule(body: &str) -> String {
    format!("[[policy.rules]]\nname = \"x\"\n{body}\n")
}

#[test]
fn action_is_the_operations_action_with_pause() {
    let pause: crate::guard::operations::Action = Action::Pause;
    assert_eq!(pause.as_str(), "pause");
    let p = policy(&rule(
        "action = \"PAUSE\"\noperations = [\"campaign.lead.delete\"]",
    ));
    assert_eq!(p.rules()[0].action, Action::Pause);
}

#[test]
fn operations_are_globs_over_the_table_sorted_and_deduplicated() {
    let cases: &[(&str, &[Op])] = &[
        ("", &[Op::CampaignDelete]),
        ("operations = [\"campaign.delete\"]", &[Op::CampaignDelete]),
        (
            "operations = [\"email_account.*\"]",
            &[Op::EmailAccountDelete],
        ),
        (
            "operations = [\"lead.delete\", \"campaign.lead.*\", \"campaign.lead.delete\"]",
            &[
                Op::CampaignLeadDelete,
                Op::CampaignLeadUnsubscribe,
                Op::LeadDelete,
            ],
        ),
        (
            "operations = [\"*.unsubscribe\"]",
            &[Op::CampaignLeadUnsubscribe, Op::LeadUnsubscribe],
        ),
        ("operations = [\"campaign.???p\"]", &[Op::CampaignStop]),
    ];
    for (field, expected) in cases {
        let p = policy(&rule(&format!("action = \"deny\"\n{field}")));
        assert_eq!(p.rules()[0].operations, *expected, "{field}");
        for op in Op::all() {
            assert_eq!(
                p.rules()[0].applies_to(op),
                expected.contains(&op),
                "{field} {op}"
            );
        }
    }
    let every = policy(&rule("action = \"deny\"\noperations = [\"*\"]"));
    assert_eq!(every.rules()[0].operations, Op::all().collect::<Vec<_>>());
}

#[test]
fn operations_that_name_nothing_are_refused_listing_the_names() {
    let err = error(&rule(
        "action = \"deny\"\noperations = [\"campaign.delete\", \"campain.*\"]",
    ));
    assert!(
        err.starts_with("policy.rules[0] (\"x\").operations: \"campain.*\" matches no operation"),
        "{err}"
    );
    let all: Vec<&str> = Op::all().map(Op::name).collect();
    assert!(err.contains(&all.join(", ")), "{err}");
    let err = error(&rule(
        "action = \"deny\"\noperations = [\"email_acount.delete\"]",
    ));
    assert!(
        err.contains("did you mean \"email_account.delete\"?"),
        "{err}"
    );
    assert_eq!(
        error(&rule("action = \"deny\"\noperations = []")),
        "policy.rules[0] (\"x\").operations: is empty, so the rule could never match; \
         list at least one value or remove the key"
    );
    let err = error(&rule("action = \"deny\"\noperations = [\" \"]"));
    assert_eq!(
        err,
        "policy.rules[0] (\"x\").operations: entries must not be empty"
    );
}

#[test]
fn defaults_come_from_the_table_unless_policy_defaults_says_otherwise() {
    let builtin = Policy::builtin();
    for op in Op::all() {
        assert_eq!(builtin.default_for(op), op.spec().default, "{op}");
    }
    assert_eq!(builtin.default_for(Op::CampaignDelete), Action::Archive);
    assert_eq!(builtin.default_for(Op::UnknownDelete), Action::Allow);
    assert_eq!(builtin.default_for(Op::CampaignStop), Action::Allow);

    let p = policy(
        "[policy]\ndefault = \"deny\"\n\n[policy.defaults]\n\
         \"campaign.lead.delete\" = \"pause\"\n\"email_account.delete\" = \"DENY\"\n\
         \"lead.delete\" = \"allow\"\n",
    );
    assert_eq!(p.default_action(), Action::Deny);
    assert_eq!(p.default_for(Op::CampaignDelete), Action::Deny);
    assert_eq!(p.default_for(Op::CampaignLeadDelete), Action::Pause);
    assert_eq!(p.default_for(Op::EmailAccountDelete), Action::Deny);
    assert_eq!(p.default_for(Op::LeadDelete), Action::Allow);
    assert_eq!(p.default_for(Op::WebhookDelete), Action::Allow);
    // Only what differs from the built-ins is kept.
    assert_eq!(
        p.defaults()
            .iter()
            .map(|(o, a)| (*o, *a))
            .collect::<Vec<_>>(),
        vec![
            (Op::CampaignLeadDelete, Action::Pause),
            (Op::EmailAccountDelete, Action::Deny)
        ]
    );

    let d = evaluate(&p, &of(Op::CampaignLeadDelete));
    assert_eq!((d.action, d.rule.as_deref()), (Action::Pause, None));
    assert!(d.snapshot_required);
    let d = evaluate(&p, &of(Op::EmailAccountDelete));
    assert_eq!(d.action, Action::Deny);
    assert!(!d.snapshot_required);
}

#[test]
fn bad_policy_defaults_are_refused_naming_the_key() {
    let cases = [
        (
            "\"campaign.lead.delet\" = \"allow\"",
            "policy.defaults.\"campaign.lead.delet\": \"campaign.lead.delet\" is not an \
             operation; did you mean \"campaign.lead.delete\"? (operations: campaign.delete, ",
        ),
        (
            "\"everything\" = \"allow\"",
            "policy.defaults.\"everything\": \"everything\" is not an operation (operations: ",
        ),
        (
            "\"lead.*\" = \"allow\"",
            "policy.defaults.\"lead.*\": \"lead.*\" is not an operation",
        ),
        (
            "\"lead.delete\" = \"archive\"",
            "policy.defaults.\"lead.delete\": \"archive\" is not an action of lead.delete \
             (use allow or deny)",
        ),
        (
            "\"campaign.stop\" = \"stop\"",
            "policy.defaults.\"campaign.stop\": \"stop\" is not an action (use allow, pause or deny)",
        ),
        // One setting, one place: the campaign.delete default is [policy] default.
        (
            "\"campaign.delete\" = \"archive\"",
            "policy.defaults.\"campaign.delete\": the campaign.delete default is [policy] \
             default (now archive); set default = \"archive\" under [policy] and remove this key",
        ),
    ];
    for (entry, expected) in cases {
        let err = error(&format!("[policy.defaults]\n{entry}\n"));
        assert!(err.starts_with(expected), "got {err:?}, want {expected:?}");
    }
}

#[test]
fn an_action_must_belong_to_every_operation_the_rule_covers() {
    assert_eq!(
        error(
            "[[policy.rules]]\nname = \"ok\"\naction = \"deny\"\n\n[[policy.rules]]\n\
             name = \"leads\"\naction = \"archive\"\noperations = [\"campaign.lead.delete\"]\n"
        ),
        "policy.rules[1] (\"leads\").action: \"archive\" is not an action of \
         campaign.lead.delete (use allow, pause or deny)"
    );
    let cases = [
        (
            "action = \"pause\"\noperations = [\"campaign.*\"]",
            "action: \"pause\" is not an action of campaign.delete (use allow, archive or deny)",
        ),
        (
            "action = \"pause\"",
            "action: \"pause\" is not an action of campaign.delete (use allow, archive or deny)",
        ),
        (
            "action = \"pause\"\noperations = [\"campaign.stop\", \"campaign.lead.delete\", \"lead.delete\"]",
            "action: \"pause\" is not an action of lead.delete (use allow or deny)",
        ),
        (
            "action = \"delete\"\noperations = [\"campaign.stop\", \"campaign.lead.delete\"]",
            "action: \"delete\" is not an action (use allow, pause or deny)",
        ),
        (
            "action = \"delete\"\noperations = [\"*\"]",
            "action: \"delete\" is not an action (use allow or deny)",
        ),
    ];
    for (body, expected) in cases {
        let err = error(&rule(body));
        assert_eq!(err, format!("policy.rules[0] (\"x\").{expected}"), "{body}");
    }
    assert_eq!(
        error("[policy]\ndefault = \"pause\""),
        "policy.default: \"pause\" is not an action of campaign.delete (use allow, archive or deny)"
    );
    let p = policy(&rule(
        "action = \"pause\"\noperations = [\"campaign.stop\", \"campaign.lead.delete\"]",
    ));
    assert_eq!(p.rules()[0].action, Action::Pause);
}

#[test]
fn the_new_match_fields_match_only_what_they_list() {
    let accounts = ["sales@acme.io".to_string(), "ops@acme.io".to_string()];
    let lead = of(Op::CampaignLeadDelete);
    let cases: &[(&str, Facts<'_>, bool)] = &[
        ("lead_email = \"*@example.com\"", lead.clone(), true),
        ("lead_email = \"ann@EXAMPLE.*\"", lead.clone(), true),
        ("lead_email = \"?nn@example.com\"", lead.clone(), true),
        ("lead_email = \"*@acme.io\"", lead.clone(), false),
        (
            "lead_email = \"*\"",
            Facts {
                lead_email: None,
                ..lead.clone()
            },
            false,
        ),
        ("lead_statuses = [\"inprogress\"]", lead.clone(), true),
        ("lead_statuses = [\"COMPLETED\", \"BLOCKED\"]", lead.clone(), false),
        (
            "lead_statuses = [\"COMPLETED\"]",
            Facts {
                lead_status: Some("completed"),
                ..lead.clone()
            },
            true,
        ),
        (
            "lead_statuses = [\"INPROGRESS\"]",
            Facts {
                lead_status: None,
                ..lead.clone()
            },
            false,
        ),
        (
            "lead_email = \"*@example.com\"\nlead_statuses = [\"INPROGRESS\"]\ncampaign_ids = [101]",
            lead.clone(),
            true,
        ),
        (
            "lead_email = \"*@example.com\"\ncampaign_ids = [102]",
            lead.clone(),
            false,
        ),
    ];
    for (fields, f, expected) in cases {
        let p = policy(&rule(&format!(
            "action = \"deny\"\noperations = [\"campaign.lead.delete\"]\n{fields}"
        )));
        assert_eq!(decided_by_rule(&p, f), *expected, "{fields} with {f:?}");
    }
    let account = Facts {
        email_accounts: &accounts,
        ..of(Op::EmailAccountDelete)
    };
    let cases: &[(&str, Facts<'_>, bool)] = &[
        ("email_account = \"ops@*\"", account.clone(), true),
        ("email_account = \"SALES@ACME.IO\"", account.clone(), true),
        ("email_account = \"*@other.io\"", account.clone(), false),
        (
            "email_account = \"*\"",
            Facts {
                email_accounts: &[],
                ..account.clone()
            },
            false,
        ),
    ];
    for (fields, f, expected) in cases {
        let p = policy(&rule(&format!(
            "action = \"deny\"\noperations = [\"email_account.delete\", \"campaign.email_accounts.remove\"]\n{fields}"
        )));
        assert_eq!(decided_by_rule(&p, f), *expected, "{fields} with {f:?}");
        let removal = Facts {
            operation: Op::CampaignEmailAccountsRemove,
            ..f.clone()
        };
        assert_eq!(decided_by_rule(&p, &removal), *expected, "{fields}");
    }
    let p = policy(&rule(
        "action = \"deny\"\noperations = [\"campaign.lead.delete\"]\nlead_statuses = [\"Blocked\"]",
    ));
    assert_eq!(
        p.rules()[0].lead_statuses.as_deref(),
        Some(&["BLOCKED".to_string()][..])
    );
}

#[test]
fn lead_and_account_values_are_checked() {
    let lead = |fields: &str| {
        error(&rule(&format!(
            "action = \"deny\"\noperations = [\"campaign.lead.delete\"]\n{fields}"
        )))
    };
    assert_eq!(
        lead("lead_statuses = [\"INPROGRESS\", \"in_progress\"]"),
        "policy.rules[0] (\"x\").lead_statuses: \"in_progress\" is not a SmartLead lead status \
         (use STARTED, INPROGRESS, COMPLETED, PAUSED, STOPPED or BLOCKED, in any case)"
    );
    assert!(
        lead("lead_statuses = []").starts_with("policy.rules[0] (\"x\").lead_statuses: is empty")
    );
    assert_eq!(
        lead("lead_email = \"\""),
        "policy.rules[0] (\"x\").lead_email: must not be empty (use \"*\" for any email, or remove the key)"
    );
    let err = error(&rule(
        "action = \"deny\"\noperations = [\"email_account.delete\"]\nemail_account = \"\"",
    ));
    assert!(
        err.starts_with("policy.rules[0] (\"x\").email_account: must not be empty"),
        "{err}"
    );
}

#[test]
fn a_match_field_must_apply_to_every_operation_the_rule_covers() {
    let cases = [
        (
            "lead_email = \"*@acme.io\"",
            "lead_email: cannot apply to campaign.delete (it has no lead); lead_email applies \
             to campaign.lead.delete, campaign.lead.unsubscribe, lead.unsubscribe and \
             lead.delete: narrow the rule's operations, or split the rule",
        ),
        (
            "operations = [\"lead.*\"]\ncampaign_ids = [1]",
            "campaign_ids: cannot apply to lead.unsubscribe (it is not about a campaign); ",
        ),
        (
            "operations = [\"campaign.lead.delete\", \"lead.delete\"]\nlead_statuses = [\"STARTED\"]",
            "lead_statuses: cannot apply to lead.delete (its lead is not in one campaign, so it \
             has no lead status); lead_statuses applies to campaign.lead.delete and \
             campaign.lead.unsubscribe: ",
        ),
        (
            "operations = [\"campaign.*\"]\nemail_account = \"*\"",
            "email_account: cannot apply to campaign.delete (it names no email account); \
             email_account applies to campaign.email_accounts.remove and email_account.delete: ",
        ),
        (
            "operations = [\"email_account.delete\"]\nstatuses = [\"ACTIVE\"]",
            "statuses: cannot apply to email_account.delete (it is not about a campaign); ",
        ),
        (
            "operations = [\"*\"]\ncampaign_name = \"*\"",
            "campaign_name: cannot apply to lead.unsubscribe (it is not about a campaign); ",
        ),
        (
            "operations = [\"webhook.delete\"]\nlead_email = \"*\"",
            "lead_email: cannot apply to webhook.delete (it has no lead); ",
        ),
    ];
    for (fields, expected) in cases {
        let err = error(&rule(&format!("action = \"deny\"\n{fields}")));
        let expected = format!("policy.rules[0] (\"x\").{expected}");
        assert!(err.starts_with(&expected), "got {err:?}, want {expected:?}");
    }
    // actors applies to every operation; campaign fields to every campaign operation.
    policy(&rule(
        "action = \"deny\"\noperations = [\"*\"]\nactors = [\"unknown\"]",
    ));
    policy(&rule(
        "action = \"deny\"\noperations = [\"campaign.*\"]\ncampaign_ids = [1]\nclient_ids = [2]\n\
         statuses = [\"ACTIVE\"]\ncampaign_name = \"*\"",
    ));
}

#[test]
fn stop_first_is_only_for_allow_rules_on_campaign_delete_alone() {
    let err = error(&rule(
        "action = \"allow\"\nstop_first = true\noperations = [\"campaign.delete\", \"campaign.stop\"]",
    ));
    assert_eq!(
        err,
        "policy.rules[0] (\"x\").stop_first: only applies to rules whose operations are \
         exactly campaign.delete (this rule covers campaign.delete and campaign.stop); remove \
         it, or give campaign.delete a rule of its own"
    );
    let p = policy(&rule(
        "action = \"allow\"\nstop_first = true\noperations = [\"campaign.delete\"]",
    ));
    assert!(evaluate(&p, &of(Op::CampaignDelete)).stop_first);
}

#[test]
fn snapshot_settings_mean_nothing_where_nothing_is_captured() {
    // unknown.delete captures nothing: no confirmation needed, none refused.
    for extra in ["", "\nallow_without_snapshot = true"] {
        let p = policy(&rule(&format!(
            "action = \"allow\"\noperations = [\"unknown.delete\"]\nsnapshot = \"off\"{extra}"
        )));
        assert_eq!(p.rules()[0].snapshot, SnapshotMode::Required);
        assert!(!p.rules()[0].allow_without_snapshot);
        let d = evaluate(&p, &of(Op::UnknownDelete));
        assert_eq!((d.action, d.snapshot_required), (Action::Allow, false));
        // ... and the setting does not change the revision.
        assert_eq!(
            p.revision(),
            policy(&rule(
                "action = \"allow\"\noperations = [\"unknown.delete\"]"
            ))
            .revision()
        );
    }
    // Anything that captures still needs the confirmation.
    let err = error(&rule(
        "action = \"allow\"\noperations = [\"unknown.delete\", \"lead_list.delete\"]\nsnapshot = \"off\"",
    ));
    assert_eq!(
        err,
        "policy.rules[0] (\"x\").snapshot: \"off\" on an allow rule forwards lead_list.delete \
         and unknown.delete with no copy of what is destroyed; if that is really wanted, add \
         allow_without_snapshot = true to the rule, otherwise remove snapshot = \"off\""
    );
    let p = policy(&rule(
        "action = \"allow\"\noperations = [\"unknown.delete\", \"lead_list.delete\"]\n\
         snapshot = \"off\"\nallow_without_snapshot = true",
    ));
    assert!(!evaluate(&p, &of(Op::LeadListDelete)).snapshot_required);
    // A pause captures first, like an archive; turning that off needs no confirmation.
    let p = policy(&rule(
        "action = \"pause\"\noperations = [\"campaign.lead.delete\"]\nsnapshot = \"off\"",
    ));
    let d = evaluate(&p, &of(Op::CampaignLeadDelete));
    assert_eq!((d.action, d.snapshot_required), (Action::Pause, false));
}

#[test]
fn only_rules_covering_the_operation_decide_it() {
    let p = policy(
        r#"
        [policy]
        default = "deny"

        [policy.defaults]
        "lead_list.delete" = "deny"

        [[policy.rules]]
        name = "watch-leads"
        action = "deny"
        mode = "shadow"
        operations = ["campaign.lead.*", "lead.*"]

        [[policy.rules]]
        name = "keep-lead-history"
        action = "pause"
        operations = ["campaign.lead.delete"]
        lead_statuses = ["INPROGRESS"]

        [[policy.rules]]
        name = "no-mailbox-deletes"
        action = "deny"
        operations = ["email_account.delete"]
        email_account = "*@acme.io"

        [[policy.rules]]
        name = "campaigns-go"
        action = "allow"
        "#,
    );
    let accounts = ["sales@acme.io".to_string()];
    let cases: &[(Facts<'_>, Action, Option<&str>, bool, &str)] = &[
        (
            of(Op::CampaignLeadDelete),
            Action::Pause,
            Some("keep-lead-history"),
            true,
            "watch-leads=deny",
        ),
        (
            Facts {
                lead_status: Some("COMPLETED"),
                ..of(Op::CampaignLeadDelete)
            },
            Action::Allow,
            None,
            true,
            "watch-leads=deny",
        ),
        (
            of(Op::LeadDelete),
            Action::Allow,
            None,
            true,
            "watch-leads=deny",
        ),
        (
            Facts {
                email_accounts: &accounts,
                ..of(Op::EmailAccountDelete)
            },
            Action::Deny,
            Some("no-mailbox-deletes"),
            false,
            "",
        ),
        (of(Op::EmailAccountDelete), Action::Allow, None, true, ""),
        (of(Op::LeadListDelete), Action::Deny, None, false, ""),
        (of(Op::UnknownDelete), Action::Allow, None, false, ""),
        (of(Op::CampaignStop), Action::Allow, None, true, ""),
        (
            of(Op::CampaignDelete),
            Action::Allow,
            Some("campaigns-go"),
            true,
            "",
        ),
    ];
    for (f, action, rule, snapshot, would) in cases {
        let d = evaluate(&p, f);
        assert_eq!(
            (d.action, d.rule.as_deref(), d.snapshot_required),
            (*action, *rule, *snapshot),
            "{f:?}"
        );
        assert_eq!(d.would_action().unwrap_or_default(), *would, "{f:?}");
        assert!(!d.stop_first);
    }
}

#[test]
fn an_enforced_deny_on_a_missing_fact_is_unknowable() {
    let p = policy(
        r#"
        [[policy.rules]]
        name = "shadow-names"
        action = "deny"
        mode = "shadow"
        campaign_name = "*"

        [[policy.rules]]
        name = "allow-leads"
        action = "allow"
        operations = ["campaign.lead.delete"]
        lead_email = "*"

        [[policy.rules]]
        name = "vip-leads"
        action = "deny"
        operations = ["campaign.lead.delete", "lead.delete"]
        lead_email = "*@vip.com"

        [[policy.rules]]
        name = "busy-leads"
        action = "deny"
        operations = ["campaign.lead.delete"]
        lead_statuses = ["INPROGRESS"]

        [[policy.rules]]
        name = "mailboxes"
        action = "deny"
        operations = ["email_account.delete"]
        email_account = "*"

        [[policy.rules]]
        name = "clients"
        action = "deny"
        client_ids = [7]
        "#,
    );
    let accounts = ["a@b.c".to_string()];
    let cases: &[(Facts<'_>, Option<&str>)] = &[
        (of(Op::CampaignLeadDelete), None),
        (
            Facts {
                lead_email: None,
                ..of(Op::CampaignLeadDelete)
            },
            Some("vip-leads"),
        ),
        (
            Facts {
                lead_email: None,
                ..of(Op::LeadDelete)
            },
            Some("vip-leads"),
        ),
        (
            Facts {
                lead_status: None,
                ..of(Op::CampaignLeadDelete)
            },
            Some("busy-leads"),
        ),
        // busy-leads does not cover lead.delete.
        (
            Facts {
                lead_status: None,
                ..of(Op::LeadDelete)
            },
            None,
        ),
        (of(Op::EmailAccountDelete), Some("mailboxes")),
        (
            Facts {
                email_accounts: &accounts,
                ..of(Op::EmailAccountDelete)
            },
            None,
        ),
        // Shadow rules and other operations' rules never count.
        (
            Facts {
                name: None,
                ..of(Op::CampaignDelete)
            },
            None,
        ),
        (
            Facts {
                client_id: None,
                client_id_known: false,
                ..of(Op::CampaignDelete)
            },
            Some("clients"),
        ),
        // A campaign read that says "no client" is a known fact.
        (
            Facts {
                client_id: None,
                client_id_known: true,
                ..of(Op::CampaignDelete)
            },
            None,
        ),
        (
            Facts {
                client_id: None,
                client_id_known: false,
                ..of(Op::CampaignStop)
            },
            None,
        ),
    ];
    for (f, expected) in cases {
        assert_eq!(p.unknowable_deny(f), *expected, "{f:?}");
    }
}

#[test]
fn explain_names_the_operation_and_the_rules_that_do_not_apply() {
    let p = policy(
        r#"
        [policy.defaults]
        "campaign.lead.delete" = "pause"

        [[policy.rules]]
        name = "campaigns"
        action = "deny"
        campaign_ids = [101]

        [[policy.rules]]
        name = "watch"
        action = "deny"
        mode = "shadow"
        operations = ["campaign.lead.*"]

        [[policy.rules]]
        name = "vip"
        action = "deny"
        operations = ["campaign.lead.delete", "lead.delete"]
        lead_email = "*@vip.com"

        [[policy.rules]]
        name = "busy"
        action = "pause"
        operations = ["campaign.lead.delete"]
        lead_statuses = ["INPROGRESS"]
        lead_email = "ann@*"

        [[policy.rules]]
        name = "rest"
        action = "allow"
        operations = ["campaign.lead.delete"]
        "#,
    );
    let text = explain(&p, &of(Op::CampaignLeadDelete));
    let expected = format!(
        "operation: campaign.lead.delete\n\
         rule 1 `campaigns` (deny, enforce): does not apply to campaign.lead.delete\n\
         rule 2 `watch` (deny, shadow): matches — no match fields, so every campaign.lead.delete\n\
         rule 3 `vip` (deny, enforce): does not match — lead email \"Ann@Example.com\" does not match \"*@vip.com\"\n\
         rule 4 `busy` (pause, enforce): matches — lead email \"Ann@Example.com\" matches \"ann@*\"; lead status INPROGRESS in [INPROGRESS]\n\
         rule 5 `rest` (allow, enforce): (not reached)\n\
         decision: pause by rule `busy`\n\
         shadow: rule `watch` would deny\n\
         policy revision: {}\n",
        p.revision()
    );
    assert_eq!(text, expected);

    let f = Facts {
        lead_email: None,
        lead_status: None,
        ..of(Op::LeadDelete)
    };
    let text = explain(&p, &f);
    assert!(text.starts_with("operation: lead.delete\n"), "{text}");
    assert!(
        text.contains("rule 3 `vip` (deny, enforce): does not match — lead email unknown, so it cannot match \"*@vip.com\"\n"),
        "{text}"
    );
    assert!(
        text.contains("rule 5 `rest` (allow, enforce): does not apply to lead.delete\n"),
        "{text}"
    );
    assert!(
        text.contains("decision: allow by the default for lead.delete\n"),
        "{text}"
    );

    let text = explain(&policy(""), &of(Op::WebhookDelete));
    assert_eq!(
        text,
        format!(
            "operation: webhook.delete\ndecision: allow by the default for webhook.delete\n\
             policy revision: {}\n",
            policy("").revision()
        )
    );
    // campaign.delete keeps its output: no operation line.
    let text = explain(&p, &of(Op::CampaignDelete));
    assert!(
        text.starts_with("rule 1 `campaigns` (deny, enforce): matches"),
        "{text}"
    );
    assert!(
        text.contains("decision: deny by rule `campaigns`\n"),
        "{text}"
    );
}

#[test]
fn explain_describes_email_accounts_and_warns_for_uncaptured_allows() {
    let p = policy(
        r#"
        [[policy.rules]]
        name = "mailboxes"
        action = "allow"
        operations = ["email_account.delete", "campaign.email_accounts.remove"]
        email_account = "*@old.io"
        snapshot = "off"
        allow_without_snapshot = true
        "#,
    );
    let two = ["a@new.io".to_string(), "b@new.io".to_string()];
    let text = explain(
        &p,
        &Facts {
            email_accounts: &two,
            ..of(Op::CampaignEmailAccountsRemove)
        },
    );
    assert!(
        text.contains("does not match — none of the email accounts \"a@new.io\", \"b@new.io\" matches \"*@old.io\"\n"),
        "{text}"
    );
    let text = explain(&p, &of(Op::EmailAccountDelete));
    assert!(
        text.contains("does not match — no email account known, so none can match \"*@old.io\"\n"),
        "{text}"
    );
    let old = ["x@old.io".to_string()];
    let text = explain(
        &p,
        &Facts {
            email_accounts: &old,
            ..of(Op::EmailAccountDelete)
        },
    );
    assert!(
        text.contains("matches — email account \"x@old.io\" matches \"*@old.io\"\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "warning: allow WITHOUT a snapshot (allow_without_snapshot = true): what \
             email_account.delete destroys is not captured before the call is forwarded\n"
        ),
        "{text}"
    );
}

#[test]
fn the_new_keys_change_the_revision_only_when_they_change_the_meaning() {
    let base = policy(BASE).revision().to_string();
    let same = [
        BASE.replace(
            "name = \"old\"",
            "name = \"old\"\noperations = [\"campaign.delete\", \"campaign.delete\"]",
        ),
        format!("{BASE}\n[policy.defaults]\n\"lead.delete\" = \"allow\"\n\"campaign.stop\" = \"ALLOW\"\n"),
    ];
    for text in &same {
        assert_eq!(policy(text).revision(), base, "{text}");
    }
    let leads =
        "\n[[policy.rules]]\nname = \"leads\"\naction = \"deny\"\noperations = [\"lead.delete\"]\n";
    let with_leads = policy(&format!("{BASE}{leads}")).revision().to_string();
    let different = [
        format!("{BASE}{leads}"),
        format!("{BASE}\n[policy.defaults]\n\"lead.delete\" = \"deny\"\n"),
        format!("{BASE}\n[policy.defaults]\n\"campaign.stop\" = \"pause\"\n"),
        format!(
            "{BASE}{}",
            leads.replace("[\"lead.delete\"]", "[\"lead.*\"]")
        ),
        format!("{BASE}{leads}lead_email = \"*@vip.com\"\n"),
        format!(
            "{BASE}{}lead_statuses = [\"BLOCKED\"]\n",
            leads.replace("lead.delete", "campaign.lead.delete")
        ),
        format!(
            "{BASE}{}email_account = \"*@acme.io\"\n",
            leads.replace("lead.delete", "email_account.delete")
        ),
    ];
    let mut seen = HashSet::from([base.clone()]);
    for text in &different {
        let revision = policy(text).revision().to_string();
        assert!(seen.insert(revision), "{text}");
    }
    // Globs are expanded: two spellings of the same operations are one policy.
    assert_eq!(
        policy(&format!(
            "{BASE}{}",
            leads.replace("[\"lead.delete\"]", "[\"lead.d*\"]")
        ))
        .revision(),
        with_leads
    );
    // Globs and lead statuses match case-insensitively, so their case is not meaning.
    let lead_rule = |fields: &str| {
        policy(&rule(&format!(
            "action = \"deny\"\noperations = [\"campaign.lead.delete\"]\n{fields}"
        )))
        .revision()
        .to_string()
    };
    assert_eq!(
        lead_rule("lead_email = \"*@VIP.com\"\nlead_statuses = [\"blocked\", \"STARTED\"]"),
        lead_rule("lead_email = \"*@vip.com\"\nlead_statuses = [\"STARTED\", \"BLOCKED\"]")
    );
}
