//! Command-line definitions (clap derive). What each command does lives in its own module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::inventory::{HostKeyPolicy, InventoryFormat};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success: every host reached and nothing failed
  2  usage or inventory error: nothing was touched
  3  audit findings at or above --fail-on (audit only)
  4  at least one host failed or was unreachable (see the recap and
     .fsfleet/retry)
  130 interrupted by Ctrl-C before every host ran (no host failed)";

#[derive(Debug, Parser)]
#[command(
    name = "fsfleet",
    version,
    about = "Harden and audit a fleet of FreeSWITCH servers over SSH, with nothing installed on them",
    long_about = "Harden and audit a fleet of FreeSWITCH servers over SSH, with nothing installed on them.\n\n\
                  Hosts come from a TOML inventory (see inventory/example.toml) or an Ansible \
                  inventory as it is (INI or YAML, with its group_vars/ and host_vars/; \
                  --inventory-format): the positional INVENTORY argument, else $FSFLEET_INVENTORY, \
                  else ./inventory.toml.",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to every host and print what fsfleet knows about it (read-only, one round trip
    /// per host): OS, sshd ports, sudo, FreeSWITCH layout and version, fail2ban, ufw, iptables.
    #[command(after_help = EXIT_CODES)]
    Facts(FactsArgs),
    /// Bring every host to the day-one baseline, in parallel and idempotently: back up the config,
    /// rotate default_password and the Event Socket password (kept in the local vault), bind the
    /// Event Socket to 127.0.0.1, log SIP auth failures, install fail2ban with a working FreeSWITCH
    /// jail, default-deny firewall, reload FreeSWITCH, write fs_cli configs, verify.
    #[command(after_help = HARDEN_HELP)]
    Harden(HardenArgs),
    /// Inspect the inventory without connecting to anything.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// The passwords fsfleet generated, from the local vault (no host is contacted).
    #[command(subcommand)]
    Creds(CredsCommand),
    /// Read-only security audit: which controls pass on each host, with evidence and the fix.
    /// Changes nothing, reloads nothing, sends no SIP. See `--list-controls`.
    #[command(after_help = AUDIT_EXIT_CODES)]
    Audit(AuditArgs),
}

pub const AUDIT_EXIT_CODES: &str = "\
Exit codes:
  0  every host audited and no control at or above --fail-on failed (or
     errored)
  2  usage or inventory error (unknown control ID in --waive, ...): nothing
     was touched
  3  a control at or above --fail-on failed or could not be evaluated on
     some host
  4  at least one host could not be audited (unreachable or failed): wins
     over 3";

/// `fsfleet audit`.
#[derive(Debug, Args)]
// RunArgs' own `--format` (text|json) is shared with other commands; audit has more formats, so
// the shared one is hidden under another name and audit's `--format` below replaces it.
#[command(mut_arg("format", |a| a.long("run-format").hide(true)))]
pub struct AuditArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    #[command(flatten)]
    pub run: RunArgs,
    /// Output on stdout: text (per host and a fleet table), json, junit (one testcase per
    /// host x control), sarif; with --list-controls: text, json or markdown.
    #[arg(id = "audit_format", long = "format", value_enum, default_value_t = AuditFormat::Text)]
    pub format: AuditFormat,
    /// Exit 3 when a control of this severity or higher fails on any host.
    #[arg(long, value_enum, default_value_t = FailOn::High)]
    pub fail_on: FailOn,
    /// Waive controls by ID on every host (comma list or repeated); waived controls are still
    /// evaluated and reported as waived, never hidden.
    #[arg(long, value_name = "ID[,ID...]", value_delimiter = ',')]
    pub waive: Vec<String>,
    /// Print the control catalogue and exit (no inventory needed).
    #[arg(long)]
    pub list_controls: bool,
}

/// Output formats of `fsfleet audit` (a superset of [`Format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Text,
    Json,
    Junit,
    Sarif,
    /// Only with --list-controls (the source of docs/controls.md).
    Markdown,
}

/// The lowest severity that makes `fsfleet audit` exit 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Critical,
    High,
    Medium,
    Low,
    Info,
}

pub const HARDEN_HELP: &str = "\
Steps, in order (names for --skip/--only):
  preflight     refuse hosts that are not Debian/Ubuntu, have no FreeSWITCH
                config, whose Event Socket listener is not FreeSWITCH's own,
                or whose running FreeSWITCH refuses the Event Socket password
                in its config (always runs)
  backup        /var/backups/fsfleet/<run-id>/: tarball of the config tree and
                every changed file (runs whenever something changes; cannot
                be skipped)
  sip-password  rotate default_password in vars.xml when it is 1234, short or
                has characters fsfleet does not generate (or --rotate)
  event-socket  rotate the ESL password when ClueCon, short or has characters
                fsfleet does not generate; listen on 127.0.0.1, ACL
                loopback.auto
  auth-logging  log-auth-failures=true in every SIP profile
  packages      iptables, rsyslog, logrotate, python3-systemd, ufw, fail2ban
  fail2ban      FreeSWITCH filter that matches 1.10 log lines, jail on the
                real log path, banning on the SIP ports the firewall opens
                and sshd's ports; ignoreip = fail2ban_ignore only
  firewall      ufw default deny; SSH, SIP, SIP-TLS, RTP open (SIP only from
                sip_allow_from if set)
  reload        reloadxml, sofia profile rescan, reload mod_event_socket, with
                the OLD password
  fs-cli        /etc/fs_cli.conf and ~/.fs_cli_conf so fs_cli keeps working
  verify        new ESL password works, fs_cli works, ESL not reachable from
                here, jail and ufw on

New passwords are generated here, stored in the vault (default
.fsfleet/vault.json beside the inventory) as pending BEFORE a host is
touched, and marked active once verified. See them with `fsfleet creds show
HOST`. A failure before the reload puts the changed config files back. The
vault's passwords are bound to the host's SSH key: a host presenting another
key is refused and sent none of them (see `fsfleet creds forget --help`).

Exit codes:
  0  every host hardened (or already was); with --check: nothing failed,
     whether or not hosts would change (the recap says CHECK and which
     would change)
  2  usage or inventory error: nothing was touched
  4  at least one host failed or was unreachable (see the recap and
     .fsfleet/retry)";

#[derive(Debug, Args)]
pub struct HardenArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    #[command(flatten)]
    pub run: RunArgs,
    /// Gather facts and show what each step would change; change nothing.
    #[arg(short = 'C', long)]
    pub check: bool,
    /// Show config diffs (secrets masked).
    #[arg(short = 'D', long)]
    pub diff: bool,
    /// Rotate the SIP and Event Socket passwords even when they are already strong.
    #[arg(long)]
    pub rotate: bool,
    /// Steps not to run (comma list; see below).
    #[arg(long, value_name = "STEPS", value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Run only these steps (preflight and backup always run).
    #[arg(long, value_name = "STEPS", value_delimiter = ',')]
    pub only: Vec<String>,
    /// `ufw --force reset` first: drop the host's other firewall rules.
    #[arg(long)]
    pub firewall_reset: bool,
    /// Edit configs even where FreeSWITCH is not running (no reload; it reads them at start).
    #[arg(long)]
    pub offline_ok: bool,
    /// The credential vault [default: .fsfleet/vault.json beside the inventory].
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CredsCommand {
    /// One host's passwords (masked unless --reveal).
    Show(CredsShowArgs),
    /// Every host's active passwords, as shell variables or JSON, for a password manager.
    Export(CredsExportArgs),
    /// Drop everything the vault holds for one host, and the host key it is bound to.
    #[command(long_about = CREDS_FORGET_HELP)]
    Forget(CredsForgetArgs),
}

pub const CREDS_FORGET_HELP: &str = "\
Drop everything the vault holds for one host: its passwords (active, pending,
previous) and the SSH host key they are bound to.

The vault binds a host's passwords to the SSH host key they were created
with: they are only sent to a host that presents that key. When an inventory
name reaches a machine with another key, `fsfleet harden` refuses it and
sends nothing:

  the vault's passwords for fs01 belong to host key SHA256:AAA...;
  this host presents SHA256:BBB...

If fs01 was really reinstalled or replaced (check the new key on its
console: `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), forget it, then
harden it again: it is treated as a new host and what the vault records for
it from then on is bound to its new key.

  fsfleet creds show fs01 --reveal   # keep a copy if the old machine exists
  fsfleet creds forget fs01
  fsfleet harden inventory.toml --limit fs01

If you did not expect a new key, do not forget anything: find out why the
name reaches another machine (DNS, a reused address, a changed inventory)
first.";

#[derive(Debug, Args)]
pub struct CredsShowArgs {
    /// The host's inventory name.
    pub host: String,
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Print the passwords themselves.
    #[arg(long)]
    pub reveal: bool,
    /// The credential vault [default: .fsfleet/vault.json beside the inventory].
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CredsForgetArgs {
    /// The host's inventory name.
    pub host: String,
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// The credential vault [default: .fsfleet/vault.json beside the inventory].
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CredsExportArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    #[arg(long, value_enum, default_value_t = ExportFormat::Env)]
    pub format: ExportFormat,
    /// The credential vault [default: .fsfleet/vault.json beside the inventory].
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// `FSFLEET_<HOST>_SIP_PASSWORD='...'` lines
    Env,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Validate the inventory and print every host with its effective settings
    /// (address, port, user, groups, jump, sudo, conf_dir, ...). Exit 2 when invalid.
    Check(InventoryCheckArgs),
}

#[derive(Debug, Args)]
pub struct InventoryCheckArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Only these hosts (same syntax as for the run commands).
    #[arg(long, short = 'l', value_name = "PATTERN")]
    pub limit: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct FactsArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct InventoryArg {
    /// The inventory file [default: $FSFLEET_INVENTORY, else ./inventory.toml]
    #[arg(value_name = "INVENTORY")]
    pub path: Option<PathBuf>,
    /// The inventory file, as a flag (Ansible's habit); same as the positional INVENTORY.
    #[arg(
        short = 'i',
        long = "inventory",
        value_name = "INVENTORY",
        conflicts_with = "path"
    )]
    pub flag: Option<PathBuf>,
    /// How to read the inventory: `toml` (fsfleet's), `ansible` (an Ansible INI or YAML
    /// inventory with its group_vars/ and host_vars/), or `auto`: by the file's extension, else
    /// its content (TOML has [[hosts]]).
    #[arg(id = "inventory_format", long = "inventory-format", value_enum, default_value_t = InventoryFormat::Auto, value_name = "FORMAT")]
    pub format: InventoryFormat,
}

impl InventoryArg {
    pub fn resolve(&self) -> PathBuf {
        self.path
            .clone()
            .or_else(|| self.flag.clone())
            .or_else(|| {
                std::env::var_os("FSFLEET_INVENTORY")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("inventory.toml"))
    }
}

/// Flags shared by every command that connects to hosts.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Only these hosts: names, group names, globs (`pbx-*`), comma lists, `!name` to exclude,
    /// `@FILE` for a list of names (e.g. `--limit @.fsfleet/retry` after a failed run).
    #[arg(long, short = 'l', value_name = "PATTERN")]
    pub limit: Option<String>,

    /// How many hosts to work on at once.
    #[arg(long, short = 'f', default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub forks: u32,

    /// Work in batches: N hosts, or P% of the hosts, one batch after the other.
    #[arg(long, value_name = "N|P%")]
    pub serial: Option<String>,

    /// Start no new host once more than P% of the hosts started so far failed or were unreachable.
    #[arg(long, value_name = "P", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_fail_percent: Option<u8>,

    /// Output on stdout: a human summary, or one JSON document.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// No progress bars, even on a terminal (progress always goes to stderr).
    #[arg(long)]
    pub no_progress: bool,

    /// More detail on stderr (repeat for more). Secrets are never printed at any level.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// known_hosts file to read and record keys in, instead of ~/.ssh/known_hosts and the
    /// inventory's (/etc/ssh/ssh_known_hosts is always read too).
    #[arg(long, value_name = "PATH")]
    pub known_hosts: Option<PathBuf>,

    /// Unknown host keys: ask once for all of them (needs a terminal), accept-new (record
    /// them; changed keys are still refused), or strict (refuse). Overrides the inventory.
    #[arg(long, value_enum)]
    pub host_key_policy: Option<HostKeyPolicy>,
}

impl RunArgs {
    pub fn verbosity(&self) -> i8 {
        if self.quiet {
            -1
        } else {
            self.verbose.min(3) as i8
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn shared_flags_parse() {
        let cli = Cli::try_parse_from([
            "fsfleet",
            "facts",
            "inv.toml",
            "--limit",
            "pbx-*,!pbx-3",
            "--forks",
            "10",
            "--format",
            "json",
            "--host-key-policy",
            "accept-new",
            "-vv",
        ])
        .unwrap();
        let Command::Facts(a) = cli.command else {
            panic!("facts")
        };
        assert_eq!(a.inventory.resolve(), PathBuf::from("inv.toml"));
        assert_eq!(a.run.limit.as_deref(), Some("pbx-*,!pbx-3"));
        assert_eq!(
            (a.run.forks, a.run.format, a.run.verbosity()),
            (10, Format::Json, 2)
        );
        assert_eq!(a.run.host_key_policy, Some(HostKeyPolicy::AcceptNew));
        assert!(Cli::try_parse_from(["fsfleet", "facts", "--forks", "0"]).is_err());
        assert!(Cli::try_parse_from(["fsfleet", "facts", "-v", "-q"]).is_err());
    }

    #[test]
    fn ansible_habits_parse() {
        let cli = Cli::try_parse_from(["fsfleet", "harden", "-i", "inv.toml", "-C", "-D"]).unwrap();
        let Command::Harden(a) = cli.command else {
            panic!("harden")
        };
        assert_eq!(a.inventory.resolve(), PathBuf::from("inv.toml"));
        assert!(a.check && a.diff);
        let cli = Cli::try_parse_from(["fsfleet", "audit", "--inventory", "x.toml"]).unwrap();
        let Command::Audit(a) = cli.command else {
            panic!("audit")
        };
        assert_eq!(a.inventory.resolve(), PathBuf::from("x.toml"));
        assert_eq!(a.inventory.format, InventoryFormat::Auto);
        let cli = Cli::try_parse_from([
            "fsfleet",
            "inventory",
            "check",
            "-i",
            "production",
            "--inventory-format",
            "ansible",
        ])
        .unwrap();
        let Command::Inventory(InventoryCommand::Check(a)) = cli.command else {
            panic!("inventory check")
        };
        assert_eq!(a.inventory.format, InventoryFormat::Ansible);
        assert!(Cli::try_parse_from(["fsfleet", "audit", "--inventory-format", "ini"]).is_err());
        // Two inventories is a mistake, not a silent choice of one.
        assert!(Cli::try_parse_from(["fsfleet", "facts", "a.toml", "-i", "b.toml"]).is_err());
    }

    /// Renders every command's long help at `width` columns.
    fn helps(width: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut root = Cli::command().term_width(width);
        root.build();
        let mut stack = vec![(String::from("fsfleet"), root)];
        while let Some((name, mut cmd)) = stack.pop() {
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    stack.push((format!("{name} {}", sub.get_name()), sub.clone()));
                }
            }
            out.push((name, cmd.render_long_help().to_string()));
        }
        out
    }

    #[test]
    fn help_texts_render_unwrapped_at_80_and_100_columns() {
        // clap re-wraps a line longer than the terminal, which turned the step table's
        // continuation words into what looked like step names.
        for width in [80, 100] {
            let all = helps(width);
            for text in [EXIT_CODES, HARDEN_HELP, AUDIT_EXIT_CODES, CREDS_FORGET_HELP] {
                assert!(
                    all.iter().any(|(_, h)| h.contains(text)),
                    "a help text was re-wrapped at {width} columns:\n{text}"
                );
            }
        }
    }

    #[test]
    fn the_harden_help_lists_exactly_the_steps() {
        let table: Vec<&str> = HARDEN_HELP
            .lines()
            .skip_while(|l| !l.starts_with("Steps"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter(|l| !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(table, crate::harden::run::STEPS);
        let packages = HARDEN_HELP
            .lines()
            .find(|l| l.trim_start().starts_with("packages "))
            .unwrap_or_default();
        for p in crate::harden::packages::FIRST
            .iter()
            .chain(crate::harden::packages::THEN)
        {
            assert!(packages.contains(p), "{p} missing from: {packages}");
        }
    }

    #[test]
    fn audit_flags_parse_with_its_own_format() {
        let cli = Cli::try_parse_from([
            "fsfleet",
            "audit",
            "inv.toml",
            "--format",
            "junit",
            "--fail-on",
            "medium",
            "--waive",
            "FS-SIP-03,FS-DP-01",
            "--waive",
            "FS-MOD-01",
            "-l",
            "pbx-1",
        ])
        .unwrap();
        let Command::Audit(a) = cli.command else {
            panic!("audit")
        };
        assert_eq!(a.format, AuditFormat::Junit);
        assert_eq!(a.fail_on, FailOn::Medium);
        assert_eq!(a.waive, ["FS-SIP-03", "FS-DP-01", "FS-MOD-01"]);
        assert_eq!(a.run.limit.as_deref(), Some("pbx-1"));
        let cli = Cli::try_parse_from([
            "fsfleet",
            "audit",
            "--list-controls",
            "--format",
            "markdown",
        ])
        .unwrap();
        let Command::Audit(a) = cli.command else {
            panic!("audit")
        };
        assert!(a.list_controls);
        assert_eq!((a.format, a.fail_on), (AuditFormat::Markdown, FailOn::High));
        assert!(Cli::try_parse_from(["fsfleet", "audit", "--format", "yaml"]).is_err());
    }
}
