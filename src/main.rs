//! fsfleet command-line entry: parse arguments, run the command, map the outcome to an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use fsfleet::cli::{
    Cli, Command, FactsArgs, Format, InventoryCheckArgs, InventoryCommand, RunArgs,
};
use fsfleet::cmd::{connector, fleet_options, select};
use fsfleet::facts;
use fsfleet::fleet;
use fsfleet::inventory::Inventory;
use fsfleet::report::{HostReport, RunReport, StepReport, StepStatus};

/// Usage and inventory errors: nothing was touched.
const EXIT_USAGE: u8 = 2;

/// An error that happened before any host was touched.
struct UsageError(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for UsageError {
    fn from(e: E) -> Self {
        UsageError(e.into())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Facts(args) => facts_command(args).await,
        Command::Inventory(InventoryCommand::Check(args)) => inventory_check(args),
        Command::Audit(args) => fsfleet::audit::command(args)
            .await
            .map_err(UsageError::from),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(UsageError(e)) => {
            eprintln!("fsfleet: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Print the run's output, write the retry file, and return the exit code.
fn finish(
    report: &RunReport,
    inv: &Inventory,
    run: &RunArgs,
    text: impl FnOnce(&RunReport) -> String,
) -> Result<u8, UsageError> {
    match run.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).context("encoding the JSON report")?
        ),
        Format::Text => print!("{}", text(report)),
    }
    match report.write_retry_file(&inv.dir()) {
        Ok(Some(p)) if run.verbosity() >= 0 => {
            eprintln!("retry the failed hosts with: --limit @{}", p.display())
        }
        Ok(_) => {}
        Err(e) => eprintln!("fsfleet: cannot write the retry file: {e}"),
    }
    Ok(u8::try_from(report.exit_code()).unwrap_or(1))
}

async fn facts_command(args: FactsArgs) -> Result<u8, UsageError> {
    let path = args.inventory.resolve();
    let (inv, hosts) = select(&path, args.run.limit.as_deref())?;
    let opts = fleet_options(&args.run)?;
    let connector = connector(&inv, &hosts, &args.run).await;
    let report = fleet::run("facts", hosts, &opts, move |ctx| {
        let connector = connector.clone();
        async move {
            let started = std::time::Instant::now();
            ctx.stage("connecting");
            let session = match connector.connect(&ctx.host).await {
                Ok(s) => s,
                Err(e) if e.is_unreachable() => {
                    return HostReport::unreachable(&ctx.host, e.to_string());
                }
                Err(e) => return HostReport::failed(&ctx.host, e.to_string()),
            };
            ctx.stage("gathering facts");
            let result = facts::base_facts(&session, &ctx.host).await;
            session.close().await;
            match result {
                Ok(f) => {
                    let step = StepReport {
                        name: "facts".into(),
                        status: StepStatus::Ok,
                        message: facts::summary(&f),
                        evidence: vec![],
                        elapsed_ms: started.elapsed().as_millis() as u64,
                    };
                    let data = serde_json::to_value(&f).unwrap_or(serde_json::Value::Null);
                    HostReport::from_steps(&ctx.host, vec![step]).with_data(data)
                }
                Err(e) => HostReport::failed(&ctx.host, e.to_string()),
            }
        }
    })
    .await;
    finish(&report, &inv, &args.run, |r| {
        format!("{}\n{}", facts::render_text(r), r.recap_text())
    })
}

fn inventory_check(args: InventoryCheckArgs) -> Result<u8, UsageError> {
    let path = args.inventory.resolve();
    let (inv, hosts) = select(&path, args.limit.as_deref())?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&hosts).context("encoding hosts")?
        ),
        Format::Text => print!("{}", fsfleet::inventory::render_hosts(&inv, &hosts)),
    }
    Ok(0)
}
