//! fsfleet command-line entry: parse arguments, run the command, map the outcome to an exit code.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use fsfleet::cli::{
    Cli, Command, CredsCommand, CredsEncryptArgs, CredsExportArgs, CredsForgetArgs, CredsShowArgs,
    ExportFormat, FactsArgs, Format, HardenArgs, InventoryCheckArgs, InventoryCommand,
    RollbackArgs, RotateArgs, RunArgs,
};
use fsfleet::cmd::{connect, connector, fleet_options, select};
use fsfleet::facts;
use fsfleet::fleet::{self, HostError};
use fsfleet::harden::{self, HardenOptions};
use fsfleet::inventory::Inventory;
use fsfleet::report::{HostReport, RunReport, StepReport, StepStatus};
use fsfleet::vault::{self, CredKind, Vault};

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
        Command::Harden(args) => harden_command(args).await,
        Command::Rollback(args) => rollback_command(args).await,
        Command::Rotate(args) => rotate_command(args).await,
        Command::Inventory(InventoryCommand::Check(args)) => inventory_check(args),
        Command::Creds(CredsCommand::Show(args)) => creds_show(args),
        Command::Creds(CredsCommand::History(args)) => creds_history(args),
        Command::Creds(CredsCommand::Export(args)) => creds_export(args),
        Command::Creds(CredsCommand::Forget(args)) => creds_forget(args),
        Command::Creds(CredsCommand::Encrypt(args)) => creds_encrypt(args),
        Command::Audit(args) => fsfleet::audit::command(args)
            .await
            .map_err(UsageError::from),
        Command::Bans(args) => fsfleet::bans::command(args).await.map_err(UsageError::from),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(UsageError(e)) => {
            // Each error's message leaves out its source: the chain names every cause once.
            eprintln!("fsfleet: {}", fsfleet::errors::chain(e.as_ref()));
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
    let (inv, hosts) = select(&path, args.inventory.format, args.run.limit.as_deref())?;
    let opts = fleet_options(&args.run)?;
    let connector = connector(&inv, &hosts, &args.run).await;
    let run = fleet::run("facts", hosts, &opts, move |ctx| {
        let connector = connector.clone();
        async move {
            ctx.stage("connecting");
            let session = connect(&connector, &ctx.host).await?;
            ctx.stage("gathering facts");
            let result = facts::base_facts(&session, &ctx.host).await;
            session.close().await;
            result.map_err(|e| HostError::Failed(fsfleet::errors::chain(&e)))
        }
    })
    .await;
    let text = facts::render_text(
        run.hosts
            .iter()
            .filter_map(|h| Some((&h.host, h.output()?.as_ref().ok()?))),
    );
    let report = run.into_report(|host, elapsed_ms, out| match out {
        Ok(f) => {
            let step = StepReport {
                name: "facts".into(),
                status: StepStatus::Ok,
                message: facts::summary(&f),
                evidence: vec![],
                elapsed_ms,
            };
            // The JSON report carries the facts as they are typed (schema in docs).
            let data = serde_json::to_value(&f).unwrap_or(serde_json::Value::Null);
            HostReport::from_steps(host, vec![step]).with_data(data)
        }
        Err(e) => e.into_report(host),
    });
    finish(&report, &inv, &args.run, |r| {
        format!("{text}\n{}", r.recap_text())
    })
}

fn inventory_check(args: InventoryCheckArgs) -> Result<u8, UsageError> {
    let path = args.inventory.resolve();
    let (inv, hosts) = select(&path, args.inventory.format, args.limit.as_deref())?;
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&hosts).context("encoding hosts")?
        ),
        Format::Text => print!("{}", fsfleet::inventory::render_hosts(&inv, &hosts)),
    }
    Ok(0)
}

async fn harden_command(args: HardenArgs) -> Result<u8, UsageError> {
    let path = args.inventory.resolve();
    let (inv, hosts) = select(&path, args.inventory.format, args.run.limit.as_deref())?;
    let opts = fsfleet::fleet::FleetOptions {
        check: args.check,
        ..fleet_options(&args.run)?
    };
    let selection =
        harden::run::Selection::new(&args.skip, &args.only).map_err(|e| anyhow::anyhow!(e))?;
    let vault = run_vault(&inv, &args.vault)?;
    let connector = connector(&inv, &hosts, &args.run).await;
    let shared = Arc::new(harden::run::Shared {
        connector,
        vault: tokio::sync::Mutex::new(vault),
        opts: HardenOptions {
            rotate: args.rotate,
            rotate_in_use: args.rotate_in_use,
            force_reregister: args.force_reregister,
            remove_in_use: args.remove_in_use,
            firewall_reset: args.firewall_reset,
            offline_ok: args.offline_ok,
            check: args.check,
            diff: args.diff,
            level: args.level,
            rotate_only: None,
            self_signed: args.self_signed.then(|| {
                args.vault
                    .clone()
                    .unwrap_or_else(|| vault::default_path_for(&inv.path, &inv.vault))
                    .parent()
                    .map_or_else(|| std::path::PathBuf::from("tls"), |d| d.join("tls"))
            }),
        },
        selection,
    });
    let report = fleet::run("harden", hosts, &opts, move |ctx| {
        harden::run::host(ctx, shared.clone())
    })
    .await
    .into_report(|_, _, report| report);
    finish_changes(report, args.check, &inv, &args.run)
}

/// The vault a command that changes hosts writes: `--vault`, else the inventory's.
fn run_vault(inv: &Inventory, explicit: &Option<std::path::PathBuf>) -> Result<Vault, UsageError> {
    let path = explicit
        .clone()
        .unwrap_or_else(|| vault::default_path_for(&inv.path, &inv.vault));
    let vault = Vault::open_with(&path, &inv.vault, &vault::AgeKeys::from_env())?;
    warn_if_tracked(&vault);
    Ok(vault)
}

/// The report of a command that changes hosts (harden, rollback): text as harden's, CHECK when
/// nothing was changed.
fn finish_changes(
    report: fsfleet::report::RunReport,
    check: bool,
    inv: &Inventory,
    run: &RunArgs,
) -> Result<u8, UsageError> {
    let report = fsfleet::report::RunReport { check, ..report };
    let verbose = run.verbosity() > 0;
    finish(&report, inv, run, |r| harden::render_text(r, verbose))
}

async fn rotate_command(args: RotateArgs) -> Result<u8, UsageError> {
    let path = args.inventory.resolve();
    // The flags first: a rotation that cannot be done is said before anything is read.
    let scope = fsfleet::rotate::scope(args.esl, args.sip, args.users);
    let (selection, hopts) =
        fsfleet::rotate::plan(scope, args.rotate_in_use, args.check, args.diff)
            .map_err(|e| anyhow::anyhow!(e))?;
    let (inv, hosts) = select(&path, args.inventory.format, args.run.limit.as_deref())?;
    let opts = fsfleet::fleet::FleetOptions {
        check: args.check,
        ..fleet_options(&args.run)?
    };
    let vault = run_vault(&inv, &args.vault)?;
    let connector = connector(&inv, &hosts, &args.run).await;
    let shared = Arc::new(harden::run::Shared {
        connector,
        vault: tokio::sync::Mutex::new(vault),
        opts: hopts,
        selection,
    });
    let report = fleet::run("rotate", hosts, &opts, move |ctx| {
        harden::run::host(ctx, shared.clone())
    })
    .await
    .into_report(|_, _, report| report);
    finish_changes(report, args.check, &inv, &args.run)
}

async fn rollback_command(args: RollbackArgs) -> Result<u8, UsageError> {
    let path = args.inventory.resolve();
    let (inv, hosts) = select(&path, args.inventory.format, args.run.limit.as_deref())?;
    if let Some(id) = &args.run_id
        && !fsfleet::rollback::valid_run_id(id)
    {
        return Err(anyhow::anyhow!(
            "--run {id:?} is not a run id (they look like 20261129T221000Z-ab12: see the recap of the harden run)"
        )
        .into());
    }
    let opts = fsfleet::fleet::FleetOptions {
        check: args.check,
        ..fleet_options(&args.run)?
    };
    let vault = run_vault(&inv, &args.vault)?;
    let connector = connector(&inv, &hosts, &args.run).await;
    let shared = Arc::new(fsfleet::rollback::Shared {
        connector,
        vault: tokio::sync::Mutex::new(vault),
        opts: fsfleet::rollback::Options {
            run: args.run_id.clone(),
            check: args.check,
            diff: args.diff,
            force: args.force,
        },
    });
    let report = fleet::run("rollback", hosts, &opts, move |ctx| {
        fsfleet::rollback::host(ctx, shared.clone())
    })
    .await
    .into_report(|_, _, report| report);
    finish_changes(report, args.check, &inv, &args.run)
}

/// The inventory's vault settings for a creds command: an inventory that is not there (a
/// vault given with --vault alone) asks for none.
fn vault_settings(
    inventory: &fsfleet::cli::InventoryArg,
) -> Result<(std::path::PathBuf, vault::VaultSettings), UsageError> {
    let path = inventory.resolve();
    let settings = if path.exists() {
        Inventory::load(&path)?.vault
    } else {
        vault::VaultSettings::default()
    };
    Ok((path, settings))
}

fn open_vault(
    inventory: &fsfleet::cli::InventoryArg,
    explicit: &Option<std::path::PathBuf>,
) -> Result<Vault, UsageError> {
    let (inv_path, settings) = vault_settings(inventory)?;
    let path = explicit
        .clone()
        .unwrap_or_else(|| vault::default_path_for(&inv_path, &settings));
    // The other form beside it: opening says what to do about it.
    let other = path.with_extension(if settings.is_age() { "json" } else { "age" });
    if !path.exists() && !other.exists() {
        return Err(anyhow::anyhow!(
            "no vault at {}: fsfleet harden creates it (or pass --vault)",
            path.display()
        )
        .into());
    }
    let vault = Vault::open_with(&path, &settings, &vault::AgeKeys::from_env())?;
    warn_if_tracked(&vault);
    Ok(vault)
}

/// Inventories live in git and the vault sits beside them: say so when git tracks it.
fn warn_if_tracked(vault: &Vault) {
    if vault::tracked_by_git(vault.path()) == Some(true) {
        let why = if vault.is_encrypted() {
            "it is encrypted, but every clone keeps every version of it for good"
        } else {
            "its passwords are in clear text in the repository and its history"
        };
        eprintln!(
            "fsfleet: warning: the vault {} is tracked by git: {why}. Untrack it (`git rm \
             --cached`), keep .fsfleet/ ignored, and rotate the passwords (`fsfleet harden \
             --rotate`) if it was ever pushed",
            vault.path().display()
        );
    }
}

fn creds_encrypt(args: CredsEncryptArgs) -> Result<u8, UsageError> {
    let (inv_path, settings) = vault_settings(&args.inventory)?;
    if !inv_path.exists() {
        return Err(anyhow::anyhow!(
            "no inventory at {}: the vault is encrypted as its vault_encryption and \
             age_recipients say",
            inv_path.display()
        )
        .into());
    }
    let plain = args
        .vault
        .clone()
        .unwrap_or_else(|| vault::default_path(&inv_path));
    let target = plain.with_extension("age");
    let done = vault::encrypt_plain(&plain, &target, &settings, &vault::AgeKeys::from_env())?;
    let to = if settings.age_recipients.is_empty() {
        format!("the passphrase in {}", vault::crypt::PASSPHRASE_ENV)
    } else {
        format!("{} age recipient(s)", settings.age_recipients.len())
    };
    match done {
        vault::Encrypted::Converted { hosts } => println!(
            "encrypted {} ({hosts} host(s)) into {} for {to}; verified, and the plain file \
             removed",
            plain.display(),
            target.display()
        ),
        vault::Encrypted::Finished { hosts } => println!(
            "{} already held the same {hosts} host(s): removed the plain {}",
            target.display(),
            plain.display()
        ),
    }
    Ok(0)
}

/// A host's vault entry, or an error naming the vault and the host.
fn host_entry<'v>(vault: &'v Vault, host: &str) -> Result<&'v vault::Entry, UsageError> {
    vault.entry(host).ok_or_else(|| {
        anyhow::anyhow!(
            "the vault {} has nothing for {host}",
            vault.path().display()
        )
        .into()
    })
}

/// One directory user's credentials in a host's entry, or an error naming them.
fn user_creds<'e>(
    vault: &Vault,
    entry: &'e vault::Entry,
    host: &str,
    user: &str,
) -> Result<&'e std::collections::BTreeMap<vault::UserCredKind, vault::Credential>, UsageError> {
    entry.users.get(user).ok_or_else(|| {
        anyhow::anyhow!(
            "the vault {} has nothing for user {} of {host}",
            vault.path().display(),
            fsfleet::display::line(user)
        )
        .into()
    })
}

fn creds_show(args: CredsShowArgs) -> Result<u8, UsageError> {
    let vault = open_vault(&args.inventory, &args.vault)?;
    let entry = host_entry(&vault, &args.host)?;
    println!("{}", args.host);
    println!(
        "  host key      {}",
        entry
            .host_key
            .as_deref()
            .unwrap_or("(not bound yet: the next harden binds it to the key it verifies)")
    );
    let show = |name: &str, c: &vault::Credential| {
        for (state, v) in [
            ("active", &c.active),
            ("pending", &c.pending),
            ("previous", &c.previous),
        ] {
            if let Some(v) = v {
                let shown = if args.reveal {
                    // A vault written by an older fsfleet may hold a value copied from a host.
                    fsfleet::display::line(&v.value).into_owned()
                } else {
                    vault::mask(&v.value)
                };
                println!(
                    "  {name:<13} {state:<8} {shown}  ({} run {})",
                    v.at, v.run_id
                );
            }
        }
    };
    if let Some(user) = &args.user {
        let creds = user_creds(&vault, entry, &args.host, user)?;
        println!("  user          {}", fsfleet::display::line(user));
        for kind in vault::UserCredKind::ALL {
            if let Some(c) = creds.get(&kind) {
                show(kind.as_str(), c);
            }
        }
    } else {
        for kind in CredKind::ALL {
            if let Some(c) = entry.creds.get(&kind) {
                show(kind.as_str(), c);
            }
        }
        if !entry.users.is_empty() {
            let ids: Vec<&str> = entry.users.keys().map(String::as_str).collect();
            println!(
                "  users         {} with their own credentials ({}): --user ID shows one",
                ids.len(),
                fsfleet::display::line(&ids.join(", "))
            );
        }
    }
    if !args.reveal {
        eprintln!("(masked: add --reveal to print the passwords)");
    }
    Ok(0)
}

/// Each of a host's (or one user's) credentials over time, newest first.
fn creds_history(args: CredsShowArgs) -> Result<u8, UsageError> {
    let vault = open_vault(&args.inventory, &args.vault)?;
    let entry = host_entry(&vault, &args.host)?;
    let creds: Vec<(&str, &vault::Credential)> = match &args.user {
        Some(user) => {
            let creds = user_creds(&vault, entry, &args.host, user)?;
            vault::UserCredKind::ALL
                .iter()
                .filter_map(|k| Some((k.as_str(), creds.get(k)?)))
                .collect()
        }
        None => CredKind::ALL
            .iter()
            .filter_map(|k| Some((k.as_str(), entry.creds.get(k)?)))
            .collect(),
    };
    print!(
        "{}",
        vault::render_history(&args.host, args.user.as_deref(), &creds, args.reveal)
    );
    if !args.reveal {
        eprintln!("(masked: add --reveal to print the passwords)");
    }
    Ok(0)
}

fn creds_forget(args: CredsForgetArgs) -> Result<u8, UsageError> {
    let mut vault = open_vault(&args.inventory, &args.vault)?;
    let Some(entry) = vault.forget(&args.host)? else {
        return Err(anyhow::anyhow!(
            "the vault {} has nothing for {}: nothing to forget",
            vault.path().display(),
            args.host
        )
        .into());
    };
    let n: usize = entry
        .creds
        .values()
        .map(|c| {
            [&c.active, &c.pending, &c.previous]
                .iter()
                .filter(|v| v.is_some())
                .count()
        })
        .sum();
    let users = if entry.users.is_empty() {
        String::new()
    } else {
        format!(" and the credentials of {} user(s)", entry.users.len())
    };
    println!(
        "forgot {}: {n} password(s){users}{}; the next `fsfleet harden` treats it as a new host",
        args.host,
        entry
            .host_key
            .map(|k| format!(", bound to host key {k}"))
            .unwrap_or_default()
    );
    Ok(0)
}

fn creds_export(args: CredsExportArgs) -> Result<u8, UsageError> {
    let vault = open_vault(&args.inventory, &args.vault)?;
    if args.users {
        let rows = vault::user_passwords(&vault);
        match args.format {
            Some(ExportFormat::Csv) => print!("{}", vault::users_csv(&rows)),
            Some(ExportFormat::Json) => println!(
                "{}",
                serde_json::to_string_pretty(&rows).context("encoding JSON")?
            ),
            _ => {
                return Err(anyhow::anyhow!("--users takes --format csv or --format json").into());
            }
        }
        if rows.is_empty() {
            eprintln!(
                "no user has a password of its own in {} (harden --level production gives them one)",
                vault.path().display()
            );
        }
        return Ok(0);
    }
    match args.format.unwrap_or(ExportFormat::Env) {
        ExportFormat::Csv => {
            return Err(anyhow::anyhow!("--format csv is for --users").into());
        }
        ExportFormat::Json => {
            let mut map = serde_json::Map::new();
            for (host, entry) in vault.hosts() {
                let mut h = serde_json::Map::new();
                for (kind, c) in &entry.creds {
                    if let Some(a) = &c.active {
                        h.insert(
                            kind.as_str().into(),
                            serde_json::Value::String(a.value.clone()),
                        );
                    }
                }
                map.insert(host.clone(), serde_json::Value::Object(h));
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&map).context("encoding JSON")?
            );
        }
        ExportFormat::Env => print!("{}", vault::export_env(&vault)?),
        ExportFormat::Pass => {
            let names = vault::pass::export(&vault, "pass")?;
            for n in &names {
                println!("{n}");
            }
            eprintln!("{} password(s) written to the password-store", names.len());
        }
    }
    Ok(0)
}
