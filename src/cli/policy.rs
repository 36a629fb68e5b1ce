//! `safedelete policy explain`: what the configured policy would decide for a
//! campaign, rule by rule, without a gateway, a database or the upstream.

use crate::config::{Config, ProcessEnv};
use crate::guard::policy::{self, Facts, UNKNOWN_ACTOR};

use super::{CliError, ConfigArg};

/// `safedelete policy ...`
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Walk the policy for one campaign: each rule, whether it matches (and
    /// which field fails), the decision and the policy revision.
    Explain(ExplainArgs),
}

/// The facts the gateway would know about a campaign when deciding. Facts
/// left out never match a rule that checks them, as when the upstream does
/// not report them.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, value_name = "N")]
    pub campaign_id: u64,
    /// The campaign's name.
    #[arg(long, value_name = "S")]
    pub name: Option<String>,
    /// The campaign's status, e.g. ACTIVE, PAUSED, COMPLETED.
    #[arg(long, value_name = "S")]
    pub status: Option<String>,
    #[arg(long, value_name = "N")]
    pub client_id: Option<u64>,
    /// The actor label from `[[actors]]` (default: `unknown`, the label of
    /// keys not listed there).
    #[arg(long, value_name = "A")]
    pub actor: Option<String>,
}

/// Runs a `policy` command.
pub fn run(command: PolicyCommand) -> Result<(), CliError> {
    match command {
        PolicyCommand::Explain(args) => explain(args),
    }
}

fn explain(args: ExplainArgs) -> Result<(), CliError> {
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
        actor,
    };
    print!("{}", policy::explain(&config.policy.policy, &facts));
    Ok(())
}
