//! `safedelete policy explain`: what the configured policy would decide for
//! one guarded operation, rule by rule, without a gateway, a database or the
//! upstream.

use crate::config::{Config, ProcessEnv};
use crate::guard::operations::{MatchField, Op};
use crate::guard::policy::{self, Facts, UNKNOWN_ACTOR};

use super::{CliError, ConfigArg};

/// `safedelete policy ...`
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Walk the policy for one operation (a campaign delete unless
    /// --operation says otherwise): each rule, whether it applies and matches
    /// (and which field fails), the decision and the policy revision.
    Explain(ExplainArgs),
}

/// The facts the gateway would know about the target when deciding. Facts
/// left out never match a rule that checks them, as when the upstream does
/// not report them; a fact the operation cannot have is refused.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The guarded operation, by its stable name (default: campaign.delete).
    #[arg(long, value_name = "NAME", value_parser = parse_operation, default_value = "campaign.delete")]
    pub operation: Op,
    /// The campaign's id.
    #[arg(long, value_name = "N")]
    pub campaign_id: Option<u64>,
    /// The campaign's name.
    #[arg(long, value_name = "S")]
    pub name: Option<String>,
    /// The campaign's status, e.g. ACTIVE, PAUSED, COMPLETED.
    #[arg(long, value_name = "S")]
    pub status: Option<String>,
    /// The campaign's client id.
    #[arg(long, value_name = "N")]
    pub client_id: Option<u64>,
    /// The lead's email address.
    #[arg(long, value_name = "E")]
    pub lead_email: Option<String>,
    /// The lead's status in the campaign, e.g. INPROGRESS, COMPLETED.
    #[arg(long, value_name = "S")]
    pub lead_status: Option<String>,
    /// An email account's address (the account deleted, or one removed
    /// from the campaign); repeat for several.
    #[arg(long, value_name = "ADDR")]
    pub email_account: Vec<String>,
    /// The actor label from `[[actors]]` (default: `unknown`, the label of
    /// keys not listed there).
    #[arg(long, value_name = "A")]
    pub actor: Option<String>,
}

/// An operation name from the table; the error lists them all.
fn parse_operation(name: &str) -> Result<Op, String> {
    Op::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Op::all().map(Op::name).collect();
        format!("not an operation (use one of {})", names.join(", "))
    })
}

/// Runs a `policy` command.
pub fn run(command: PolicyCommand) -> Result<(), CliError> {
    match command {
        PolicyCommand::Explain(args) => explain(args),
    }
}

fn explain(args: ExplainArgs) -> Result<(), CliError> {
    let op = args.operation;
    // Checked before the config is read: it is a mistake in the command line.
    let given = [
        (
            "--campaign-id",
            MatchField::CampaignIds,
            args.campaign_id.is_some(),
        ),
        ("--name", MatchField::CampaignName, args.name.is_some()),
        ("--status", MatchField::Statuses, args.status.is_some()),
        (
            "--client-id",
            MatchField::ClientIds,
            args.client_id.is_some(),
        ),
        (
            "--lead-email",
            MatchField::LeadEmail,
            args.lead_email.is_some(),
        ),
        (
            "--lead-status",
            MatchField::LeadStatuses,
            args.lead_status.is_some(),
        ),
        (
            "--email-account",
            MatchField::EmailAccount,
            !args.email_account.is_empty(),
        ),
    ];
    if let Some(&(flag, _, _)) = given
        .iter()
        .find(|&&(_, field, present)| present && !op.has_field(field))
    {
        let mut facts: Vec<&str> = given
            .iter()
            .filter(|&&(_, field, _)| op.has_field(field))
            .map(|&(flag, _, _)| flag)
            .collect();
        facts.push("--actor");
        return Err(CliError::FactDoesNotApply {
            flag,
            operation: op,
            facts: facts.join(", "),
        });
    }
    let config = Config::load(args.config.config.as_deref(), &ProcessEnv)?;
    let actor = args.actor.as_deref().unwrap_or(UNKNOWN_ACTOR);
    let known = actor == UNKNOWN_ACTOR || config.policy.actors.iter().any(|a| a.name == actor);
    if !known {
        // Still explained, since rules may name actors before their keys are
        // listed, but the gateway itself would label such a caller `unknown`.
        eprintln!(
            "note: actor `{actor}` is not listed in [[actors]]; \
             the gateway labels callers with unlisted keys `unknown`"
        );
    }
    let facts = Facts {
        campaign_id: args.campaign_id,
        name: args.name.as_deref(),
        status: args.status.as_deref(),
        client_id: args.client_id,
        client_id_known: args.client_id.is_some(),
        lead_email: args.lead_email.as_deref(),
        lead_status: args.lead_status.as_deref(),
        email_accounts: &args.email_account,
        ..Facts::new(op, actor)
    };
    print!("{}", policy::explain(&config.policy.policy, &facts));
    Ok(())
}
