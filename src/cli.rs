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
    /// Put hosts back to their state before a harden run: its config files byte for byte from
    /// the host's backup, the files it created removed, FreeSWITCH reloaded in harden's order,
    /// the vault's passwords moved back.
    #[command(after_help = ROLLBACK_HELP)]
    Rollback(RollbackArgs),
    /// New Event Socket and SIP passwords (scheduled, or after a staff change) and nothing else
    /// of the baseline: vault first, reload with the old password, fs_cli configs, verify; the
    /// vault keeps each password's history.
    #[command(after_help = ROTATE_HELP)]
    Rotate(RotateArgs),
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
    /// The fleet's fail2ban bans in one table; share them across the fleet (--share), lift one
    /// everywhere (--unban) or ban a blocklist on every host (--import).
    #[command(after_help = BANS_HELP)]
    Bans(BansArgs),
}

pub const BANS_HELP: &str = "\
What it does:
  (no flag)        one table of the current bans of every host: host, jail
                   (freeswitch, sshd), address, since, bantime, and the
                   failures that led to the ban; read from fail2ban itself
                   (server and database), one SSH round trip per host
  --share          ban every address banned in the freeswitch jail of any
                   host in the freeswitch jail of every other host; a
                   re-run bans nothing new (add --check to see the plan)
  --unban ADDRESS  lift the ban of ADDRESS (or CIDR) in every jail of every
                   host
  --import FILE    ban every address or CIDR of FILE in the freeswitch jail
                   of every host (add --check to see the plan)

Never banned by --share or --import: a host's fail2ban_ignore and
sip_allow_from entries (a 0.0.0.0/0 allow-list names nobody and protects
nothing), the address a host sees fsfleet's SSH connection come from,
loopback, and networks wider than /8 (IPv4) or /32 (IPv6). The freeswitch
jail bans on the SIP ports only: SSH is never cut. sshd-jail bans are
listed, not shared. A ban lasts the jail's bantime (fail2ban_bantime),
like any other: re-run --share or --import (cron) to keep a list in force.

Blocklist FILE (the plain format of APIBAN and VoIPBL): one address or
CIDR per line, `#` starts a comment, blank lines are skipped. The whole
file is checked before any host is contacted: one bad line (with its
number in the error), 0.0.0.0/0 or ::/0 refuses the file, exit 2, and
nothing changes anywhere.

Examples:
  fsfleet bans inventory.toml
  fsfleet bans inventory.toml --format json        # for monitoring
  fsfleet bans inventory.toml --share --check
  fsfleet bans inventory.toml --share
  fsfleet bans inventory.toml --unban 203.0.113.7
  fsfleet bans inventory.toml --import voipbl.txt --check

Exit codes:
  0  every host read (and changed as planned); with --check: nothing
     failed, whether or not hosts would change
  2  usage, inventory, address or blocklist error: nothing was touched
  4  at least one host failed or was unreachable (fail2ban not running,
     jail down, ...; see the recap and .fsfleet/retry)";

/// `fsfleet bans`.
#[derive(Debug, Args)]
pub struct BansArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    #[command(flatten)]
    pub run: RunArgs,
    /// Ban every address banned in some host's freeswitch jail on every other host.
    #[arg(long, conflicts_with_all = ["unban", "import"])]
    pub share: bool,
    /// Lift the ban of this address or CIDR network in every jail of every host.
    #[arg(long, value_name = "ADDRESS", conflicts_with_all = ["share", "import", "check"])]
    pub unban: Option<String>,
    /// Ban every address or network of this blocklist (one per line, `#` comments) on every
    /// host.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["share", "unban"])]
    pub import: Option<PathBuf>,
    /// With --share or --import: show what would be banned where; change nothing.
    #[arg(short = 'C', long)]
    pub check: bool,
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
    /// host x control), sarif; with --list-controls or --list-advisories: text, json or
    /// markdown.
    #[arg(id = "audit_format", long = "format", value_enum, default_value_t = AuditFormat::Text)]
    pub format: AuditFormat,
    /// Exit 3 when a control of this severity or higher fails on any host.
    #[arg(long, value_enum, default_value_t = FailOn::High)]
    pub fail_on: FailOn,
    /// Waive controls by ID on every host (comma list or repeated); waived controls are still
    /// evaluated and reported as waived, never hidden.
    #[arg(long, value_name = "ID[,ID...]", value_delimiter = ',')]
    pub waive: Vec<String>,
    /// Run FS-F2B-03's fail2ban-regex proof on every host. Without it a host runs the proof
    /// only when its filter files, fail2ban's version or its log format changed since the
    /// controller's last proof for that host (.fsfleet/fail2ban-proofs.json), and not at all when
    /// they hash the same as one of the proofs fsfleet's test suite made (Debian's fail2ban with
    /// Debian's or fsfleet's filter); the evidence says which.
    #[arg(long)]
    pub reprove: bool,
    /// Print the control catalogue and exit (no inventory needed).
    #[arg(long)]
    pub list_controls: bool,
    /// Print the catalogue of known advisories the FS-VULN controls check (CVE/GHSA, component,
    /// fixed version, severity, mitigation, source) and exit (no inventory needed); with
    /// --format markdown it is docs/advisories.md.
    #[arg(long, conflicts_with = "list_controls")]
    pub list_advisories: bool,
}

/// Output formats of `fsfleet audit` (a superset of [`Format`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Text,
    Json,
    Junit,
    Sarif,
    /// Only with --list-controls or --list-advisories (the source of docs/controls.md and
    /// docs/advisories.md).
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
                has characters fsfleet does not generate (or --rotate); names
                the directory users that log in with it and refuses while any
                of them is registered (--rotate-in-use rotates anyway)
  event-socket  rotate the ESL password when ClueCon, short or has characters
                fsfleet does not generate; listen on 127.0.0.1, ACL
                loopback.auto
  auth-logging  log-auth-failures=true in every SIP profile
  remove-stock-users [production] the stock users 1000-1019, brian and
                default (files still as shipped) disabled, but those in
                keep_users, registered now or routed to by the dialplan
                (--remove-in-use disables them anyway) (reloadxml)
  dialplan      [production] stock sip_uri and example gateway extensions
                commented out, international out of the stock users'
                toll_allow; operator-written ones untouched (reloadxml)
  voicemail-pins [production] a distinct generated PIN (vault) for every
                user whose vm-password is its extension
  per-user-passwords [production] every user on $${default_password} (or
                with no password; not the stock passwordless `default`) gets
                its own generated password (vault; `fsfleet creds export
                --users`); refuses while any of them is registered
                (--force-reregister changes them anyway); names the phones
                to reprovision
  sip-protocol  [production] auth-messages and auth-subscriptions true on
                every profile with auth-calls true (SIP MESSAGE and SUBSCRIBE
                challenged); trunk-facing profiles named, left (rescan)
  modules       [production] mod_verto (stock verto.conf), mod_signalwire (no
                token), mod_xml_rpc commented out in modules.conf.xml unless
                in modules_keep; unload over the Event Socket, else restart
  file-modes    [production] every config file holding a credential readable
                only by root and FreeSWITCH (autoload_configs, gateways, ...)
  packages      iptables, rsyslog, logrotate, python3-systemd, ufw, fail2ban
  fail2ban      FreeSWITCH filter that matches 1.10 log lines, jail on the
                real log path, banning on the SIP ports the firewall opens
                and sshd's ports; ignoreip = fail2ban_ignore only
  firewall      ufw default deny; SSH, SIP, SIP-TLS, RTP open (SIP only from
                sip_allow_from if set)
  reload        reloadxml, sofia profile rescan/restart, unload mod_x, reload
                mod_event_socket, with the OLD password
  fs-cli        /etc/fs_cli.conf and ~/.fs_cli_conf so fs_cli keeps working
  tls           [production] the inventory's tls_cert/tls_key (or
                --self-signed) uploaded as agent.pem (0600, FreeSWITCH's) and
                cafile.pem in FreeSWITCH's certs dir, TLS on (vars.xml
                internal/external_ssl_enable) at TLS 1.2 (sip_tls_version),
                profiles restarted, then a TLS handshake from here must show
                the certificate's SHA-256; skipped without a certificate
  verify        new ESL password works, fs_cli works, ESL not reachable from
                here, jail and ufw on

A [production] step runs only at --level production (or level =
\"production\" in the inventory), or when --only names it; see
docs/production.md for what each changes and how to undo it.

New passwords are generated here, stored in the vault (default
.fsfleet/vault.json beside the inventory) as pending BEFORE a host is
touched, and marked active once verified. See them with `fsfleet creds show
HOST`. A failure before the reload puts the changed config files back. The
vault's passwords are bound to the host's SSH key: a host presenting another
key is refused and sent none of them (see `fsfleet creds forget --help`).
With vault_encryption = \"age\" in the inventory the vault is
.fsfleet/vault.age, encrypted with age, read and written with
FSFLEET_AGE_IDENTITY or FSFLEET_VAULT_PASSPHRASE (see `fsfleet creds encrypt
--help`).

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
    /// Rotate default_password even while phones of users that log in with it are registered
    /// (they stop working until they get the new password; the report names them).
    #[arg(long)]
    pub rotate_in_use: bool,
    /// per-user-passwords: give users their own passwords even while their phones are
    /// registered (each phone stops registering until it gets its new password; the report
    /// names them).
    #[arg(long)]
    pub force_reregister: bool,
    /// remove-stock-users: disable stock users even while registered or routed to by the
    /// dialplan (the report names them).
    #[arg(long)]
    pub remove_in_use: bool,
    /// Steps not to run (comma list; see below).
    #[arg(long, value_name = "STEPS", value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Run only these steps (preflight and backup always run; reload runs when their changes
    /// need it, unless --skip reload); a production step named here runs at any level.
    #[arg(long, value_name = "STEPS", value_delimiter = ',')]
    pub only: Vec<String>,
    /// baseline: the day-one steps; production: also the [production] steps below. Overrides
    /// the inventory's `level` [default: the inventory's, else baseline].
    #[arg(long, value_enum)]
    pub level: Option<crate::inventory::HardenLevel>,
    /// tls: hosts without tls_cert/tls_key get a self-signed certificate made on the
    /// controller (for testing: phones will not trust it), kept with its key (0600) in
    /// .fsfleet/tls/HOST/ beside the vault and reused by later runs.
    #[arg(long)]
    pub self_signed: bool,
    /// `ufw --force reset` first: drop the host's other firewall rules.
    #[arg(long)]
    pub firewall_reset: bool,
    /// Edit configs even where FreeSWITCH is not running (no reload; it reads them at start).
    #[arg(long)]
    pub offline_ok: bool,
    /// The credential vault [default: .fsfleet/vault.json beside the inventory, vault.age if
    /// encrypted].
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

pub const ROLLBACK_HELP: &str = "\
Which run: the newest harden run recorded on each host (its backup under
/var/backups/fsfleet/RUN-ID/ lists the files the run changed and what it left);
--run RUN-ID names another (the recap of every harden run prints its id).
A run already rolled back is refused (name an earlier one to go further).

Refused, for that host only, with the files named:
  - a file changed since the run by someone else (--force restores it anyway)
  - a run that did not record what it left (it did not finish; --force)
  - a path that is no longer a regular file (a link, a directory)

What it does, per host: every file back (one all-or-nothing batch, old owner
and mode), files the run created removed; reloadxml, sofia profile rescan of
the restored profiles, reload mod_event_socket last (with the password
FreeSWITCH runs now; reconnect with the restored one); a failed reload puts
the files back as they were. fail2ban restarts when its files change. The
vault makes the restored passwords active (the undone ones stay as
previous). ufw goes back as the run found it (its rules deleted, the old
default policies, disabled if the run enabled it; a new SSH login must work
while it stays on). Left alone: installed packages.

Exit codes:
  0  every host rolled back (or, with --check, nothing failed)
  2  usage or inventory error: nothing was touched
  4  at least one host was refused, failed or was unreachable";

/// `fsfleet rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    #[command(flatten)]
    pub run: RunArgs,
    /// The harden run to undo [default: the newest one recorded on the host].
    #[arg(long = "run", value_name = "RUN-ID")]
    pub run_id: Option<String>,
    /// Show what would be restored and removed; change nothing.
    #[arg(short = 'C', long)]
    pub check: bool,
    /// Show the changes as diffs (secrets masked).
    #[arg(short = 'D', long)]
    pub diff: bool,
    /// Restore files that were changed since the run all the same.
    #[arg(long)]
    pub force: bool,
    /// The credential vault [default: .fsfleet/vault.json beside the inventory].
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

pub const ROTATE_HELP: &str = "\
Which passwords (none of the three flags: --esl and --sip):
  --esl    the Event Socket password, and the fs_cli configs that carry it
           (/etc/fs_cli.conf, and root's or the login user's ~/.fs_cli_conf)
  --sip    vars.xml's default_password (every directory user without a
           password of its own logs in with it)
  --users  every directory user's own SIP password (the ones the
           production level's per-user-passwords step gives; users still on
           default_password are left alone); refused while one of their
           phones is registered, like --sip (--rotate-in-use)

Who is affected (--check shows it, changing nothing):
  --sip asks FreeSWITCH who is registered (sofia xmlstatus, through the
  Event Socket) and REFUSES the host while a user that logs in with
  default_password is registered, naming them; --rotate-in-use rotates
  anyway and lists the phones to give the new password
  (`fsfleet creds show HOST --reveal`).
  --esl: fs_cli keeps working (its configs are rewritten); your own Event
  Socket clients are disconnected by the reload and need the new password.
  Calls are SIP, not Event Socket: the reload does not touch them (--check
  says how many are up), and verify proves the old password is refused.

What it does, per host (harden's order and guarantees): back up the files
(`fsfleet rollback` undoes a rotation), the new passwords to the vault as
pending BEFORE the host sees them, one all-or-nothing write, reloadxml, then
`reload mod_event_socket` with the OLD password, reconnect with the new one,
fs_cli configs, verify (the new Event Socket password and fs_cli work), the
vault's new values active. `fsfleet creds history HOST` lists each
password's last values with their run ids.

Only the passwords change. On a host not hardened yet, the rewritten file
becomes readable only by root and FreeSWITCH (a new secret never goes into a
world-readable file) and what harden would still change (an Event Socket
listening on the network, its ACL) is a warning: run `fsfleet harden` for it.

  fsfleet rotate inventory.toml --check          # who and what, no change
  fsfleet rotate inventory.toml --esl            # the Event Socket only
  fsfleet rotate inventory.toml --sip --limit fs01 --rotate-in-use

Exit codes:
  0  every host rotated (or, with --check, nothing would be refused)
  2  usage or inventory error: nothing was touched
  4  at least one host was refused (a registered phone), failed or was
     unreachable (see the recap and .fsfleet/retry)";

/// `fsfleet rotate`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    #[command(flatten)]
    pub run: RunArgs,
    /// Rotate the Event Socket password (and rewrite the fs_cli configs).
    #[arg(long)]
    pub esl: bool,
    /// Rotate vars.xml's default_password.
    #[arg(long)]
    pub sip: bool,
    /// Rotate every directory user's own SIP password (the production level's per-user ones).
    #[arg(long)]
    pub users: bool,
    /// Rotate default_password even while phones of users that log in with it are registered
    /// (they stop working until they get the new password; the report names them).
    #[arg(long)]
    pub rotate_in_use: bool,
    /// Show what would rotate on each host and who it affects; change nothing.
    #[arg(short = 'C', long)]
    pub check: bool,
    /// Show config diffs (secrets masked).
    #[arg(short = 'D', long)]
    pub diff: bool,
    /// The credential vault [default: .fsfleet/vault.json beside the inventory, vault.age if
    /// encrypted].
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CredsCommand {
    /// One host's passwords (masked unless --reveal).
    Show(CredsShowArgs),
    /// Each of one host's passwords over time: the last values with the run that set them and
    /// when (masked unless --reveal).
    History(CredsShowArgs),
    /// Every host's active passwords: as shell variables, JSON, or into pass; --users: every
    /// directory user's own SIP password, CSV or JSON.
    #[command(long_about = CREDS_EXPORT_HELP)]
    Export(CredsExportArgs),
    /// Encrypt a plain vault with age, as the inventory's vault_encryption says.
    #[command(long_about = CREDS_ENCRYPT_HELP)]
    Encrypt(CredsEncryptArgs),
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

pub const CREDS_EXPORT_HELP: &str = "\
Every host's active passwords, for a password manager or a script.

  --format env    FSFLEET_<HOST>_SIP_PASSWORD='...' lines, for `eval`
  --format json   {\"HOST\": {\"sip_password\": \"...\", \"esl_password\": \"...\"}}
  --format pass   each into your password-store as fsfleet/HOST/sip_password
                  and fsfleet/HOST/esl_password (`pass insert --multiline
                  --force`, the secret on its stdin, never in an argument);
                  prints the names

With --users, every directory user's own SIP password (set by the
per-user-passwords step of `harden --level production`), for provisioning
phones:

  --users --format csv    host,domain,user,password (a header, then a row
                          per user; RFC 4180 quoting)
  --users --format json   [{\"host\": ..., \"domain\": ..., \"user\": ...,
                          \"password\": ...}, ...]

The domain is the SIP domain the phone registers to (FreeSWITCH's `domain`
when the run knew it, else empty). Passwords go to stdout only: redirect it
to a file only you can read.

pass uses your store and GnuPG key as usual (PASSWORD_STORE_DIR, GNUPGHOME;
`pass init KEY-ID` once). An encrypted vault is read with
FSFLEET_AGE_IDENTITY or FSFLEET_VAULT_PASSPHRASE (see `fsfleet creds encrypt
--help`).";

pub const CREDS_ENCRYPT_HELP: &str = "\
Encrypt the plain vault (.fsfleet/vault.json) into .fsfleet/vault.age with age,
readable by the standard `age` tool. First say so in the inventory, above any
table:

  vault_encryption = \"age\"
  age_recipients = [\"age1...\", \"age1...\"]   # everyone who may read it

and point FSFLEET_AGE_IDENTITY at your identity file (`age-keygen -o FILE`;
its public key, `age-keygen -y FILE`, must be one of the recipients). Without
age_recipients the vault is encrypted to the passphrase in
FSFLEET_VAULT_PASSPHRASE instead.

The encrypted file is written atomically, read back and decrypted, and only
then is the plain file removed; any failure leaves the plain vault as it was.
From then on every command reads and writes the encrypted vault (the same
environment variables), and `age -d -i FILE .fsfleet/vault.age` shows it.
Removing the plain file does not scrub the disk blocks it used: run
`fsfleet harden --rotate` if that matters.

  age-keygen -o ~/.config/fsfleet/age.key
  export FSFLEET_AGE_IDENTITY=~/.config/fsfleet/age.key
  fsfleet creds encrypt inventory.toml";

#[derive(Debug, Args)]
pub struct CredsEncryptArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// The plain vault to encrypt [default: .fsfleet/vault.json beside the inventory]; the
    /// encrypted one is written beside it, named *.age.
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CredsShowArgs {
    /// The host's inventory name.
    pub host: String,
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// Print the passwords themselves.
    #[arg(long)]
    pub reveal: bool,
    /// Show this directory user's credentials (its voicemail PIN) instead of the host's.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    /// The credential vault [default: .fsfleet/vault.json beside the inventory, vault.age if
    /// encrypted].
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CredsForgetArgs {
    /// The host's inventory name.
    pub host: String,
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// The credential vault [default: .fsfleet/vault.json beside the inventory, vault.age if
    /// encrypted].
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CredsExportArgs {
    #[command(flatten)]
    pub inventory: InventoryArg,
    /// env, json, pass; with --users: csv or json.
    #[arg(long, value_enum)]
    pub format: Option<ExportFormat>,
    /// Every directory user's own SIP password (from per-user-passwords): host, domain, user,
    /// password, for provisioning phones.
    #[arg(long)]
    pub users: bool,
    /// The credential vault [default: .fsfleet/vault.json beside the inventory, vault.age if
    /// encrypted].
    #[arg(long, value_name = "PATH")]
    pub vault: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// `FSFLEET_<HOST>_SIP_PASSWORD='...'` lines
    Env,
    Json,
    /// Into the password-store: `pass insert` of fsfleet/HOST/KIND
    Pass,
    /// With --users: `host,domain,user,password` rows (RFC 4180)
    Csv,
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
            for text in [
                EXIT_CODES,
                HARDEN_HELP,
                AUDIT_EXIT_CODES,
                CREDS_FORGET_HELP,
                CREDS_EXPORT_HELP,
                CREDS_ENCRYPT_HELP,
                BANS_HELP,
                ROLLBACK_HELP,
            ] {
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
    fn bans_takes_one_action_at_a_time() {
        let cli = Cli::try_parse_from(["fsfleet", "bans", "inv.toml", "--share", "-C"]).unwrap();
        let Command::Bans(a) = cli.command else {
            panic!("bans")
        };
        assert!(a.share && a.check && a.unban.is_none() && a.import.is_none());
        let cli = Cli::try_parse_from(["fsfleet", "bans", "--import", "l.txt", "--format", "json"])
            .unwrap();
        let Command::Bans(a) = cli.command else {
            panic!("bans")
        };
        assert_eq!(a.import, Some(PathBuf::from("l.txt")));
        assert_eq!(a.run.format, Format::Json);
        for bad in [
            &["--share", "--unban", "192.0.2.1"][..],
            &["--share", "--import", "l.txt"],
            &["--unban", "192.0.2.1", "--import", "l.txt"],
            &["--unban", "192.0.2.1", "--check"],
        ] {
            let mut argv = vec!["fsfleet", "bans"];
            argv.extend_from_slice(bad);
            assert!(Cli::try_parse_from(&argv).is_err(), "{bad:?} parsed");
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
