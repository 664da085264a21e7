//! Production step `tls`: SIP over TLS with the operator's certificate.
//!
//! With `tls_cert`/`tls_key` in the inventory (or `--self-signed`), the certificate and key go
//! where FreeSWITCH 1.10 looks for them when a profile's `tls-cert-dir` is unset: its certs
//! dir (`$${certs_dir}`: `/etc/freeswitch/tls` for the Debian packages, `PREFIX/certs` for a
//! source build), as `agent.pem` (certificate chain and private key in one file, read by
//! OpenSSL) and `cafile.pem` (the chain). mod_sofia needs both: without either it serves
//! `tls.pem`, which it generates itself (sofia.c `config_sofia`, see docs/production.md). The
//! files are written in the run's one all-or-nothing config write, with the vars.xml edits that
//! turn TLS on (`internal_ssl_enable`, `external_ssl_enable`) and restrict it to TLS 1.2
//! (`sip_tls_version`); `agent.pem` holds the key, so it is FreeSWITCH's own and 0600.
//!
//! A profile binds its TLS port and loads the certificate only when it starts, so every
//! profile that serves TLS after the edits and did not serve this certificate before gets
//! `sofia profile NAME restart` (after `reloadxml`). Then, from the controller, a TLS handshake
//! on each TLS port must show the uploaded certificate's SHA-256 fingerprint.
//!
//! The key never leaves the controller but in the write to the host (stdin of hostfs, never
//! argv); plans, diffs and reports name the certificate by its fingerprint only.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::context::Meta;
use super::step::{Phase, Plan, PlanInput, Step};
use super::{FileEdit, Probes, StepCtx, StepError, StepPlan, reload};
use crate::conf::{diff, vars};
use crate::facts::{FileFact, Files, LAYOUTS};
use crate::inventory::{ConfDir, HardenLevel, Host};
use crate::model::{self, HostModel};
use crate::secret::Secret;

pub const NAME: &str = "tls";
/// The file mod_sofia loads the server certificate and key from.
pub const AGENT: &str = "agent.pem";
/// The CA file mod_sofia requires beside it.
pub const CAFILE: &str = "cafile.pem";
/// The vars.xml variables the stock profiles' `tls` params use.
pub const ENABLE_VARS: &[&str] = &["internal_ssl_enable", "external_ssl_enable"];
/// The variable of the stock profiles' `tls-version`, and what it becomes: TLS 1.2 only of the
/// versions FreeSWITCH 1.10 accepts there (`sslv2,sslv3,sslv23,tlsv1,tlsv1.1,tlsv1.2`).
pub const VERSION_VAR: &str = "sip_tls_version";
pub const VERSION: &str = "tlsv1.2";
/// How long the handshake check keeps trying while a restarted profile comes back.
pub const VERIFY_WITHIN: Duration = Duration::from_secs(30);

/// The step in the registry: its files and vars.xml edits go out in the config write, the
/// profiles restart in the reload, and `apply` checks what FreeSWITCH serves.
pub struct Tls;

impl Step for Tls {
    const NAME: &'static str = NAME;
    const DOING: &'static str = "checking the certificate FreeSWITCH serves over TLS";
    const PHASE: Phase = Phase::AfterReload;
    const LEVEL: HardenLevel = HardenLevel::Production;
    type Action = Option<Verify>;

    fn probes(p: &mut Probes, host: &Host) {
        for dir in certs_dir_candidates(host) {
            p.file(format!("{dir}/{AGENT}"));
            p.file(format!("{dir}/{CAFILE}"));
        }
    }

    fn plan(input: &PlanInput<'_>) -> Result<Plan<Option<Verify>>, StepError> {
        plan(input)
    }

    fn apply<'a>(
        _ctx: &'a StepCtx<'a>,
        action: &'a Option<Verify>,
    ) -> impl Future<Output = Result<Vec<String>, StepError>> + Send + 'a {
        check(action)
    }
}

async fn check(action: &Option<Verify>) -> Result<Vec<String>, StepError> {
    match action {
        Some(v) => verify(v).await,
        None => Ok(Vec::new()),
    }
}

/// FreeSWITCH's certs dir for a config dir, as its build sets `certs_dir`: beside `conf/` in a
/// source build (`/usr/local/freeswitch/certs`), `CONF/tls` otherwise (the Debian packages'
/// `/etc/freeswitch/tls`).
pub fn certs_dir(conf_dir: &str) -> String {
    match conf_dir.strip_suffix("/conf") {
        Some(base) if !base.is_empty() => format!("{base}/certs"),
        _ => format!("{}/tls", conf_dir.trim_end_matches('/')),
    }
}

fn certs_dir_candidates(host: &Host) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let ConfDir::Path(p) = &host.conf_dir {
        out.push(certs_dir(p));
    }
    for (c, _, _) in LAYOUTS {
        let d = certs_dir(c);
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The certificate and key on the controller

/// Why the certificate or key cannot be used; each names the file and the host.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("host {host}: cannot read {what} {path}: {source}")]
    Read {
        host: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host {host}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { host: String, path: PathBuf },
    #[error("host {host}: {path} is not valid PEM: {why}")]
    BadPem {
        host: String,
        path: PathBuf,
        why: String,
    },
    #[error("host {host}: the first certificate of {path} is not a valid X.509 certificate: {why}")]
    BadCertificate {
        host: String,
        path: PathBuf,
        why: String,
    },
    #[error(
        "host {host}: {path} holds no usable private key (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY, not encrypted)"
    )]
    NoKey { host: String, path: PathBuf },
    #[error("host {host}: the private key {key} is not the key of the certificate {cert}: {why}")]
    Mismatch {
        host: String,
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("host {host}: tls_cert and tls_key go together: {missing} is not set")]
    Half { host: String, missing: &'static str },
    #[error("host {host}: --self-signed: {what}: {why}")]
    SelfSigned {
        host: String,
        what: String,
        why: String,
    },
}

/// A certificate chain and its private key, checked to belong together. The key is a secret:
/// Debug shows the fingerprint only.
pub struct Material {
    /// The certificate file's bytes (the chain, server certificate first).
    chain_pem: Vec<u8>,
    key_pem: Secret,
    /// SHA-256 of the server certificate (DER).
    pub fingerprint: [u8; 32],
    /// Where it came from, for the report.
    pub source: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("fingerprint", &fingerprint_hex(&self.fingerprint))
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Check a certificate chain and key (PEM bytes) and that the key is the certificate's.
    pub fn from_pem(
        host: &str,
        cert_path: &Path,
        cert_pem: Vec<u8>,
        key_path: &Path,
        key_pem: Secret,
    ) -> Result<Material, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::BadPem {
                host: host.to_string(),
                path: cert_path.to_path_buf(),
                why: e.to_string(),
            })?;
        let Some(leaf) = chain.first() else {
            return Err(TlsError::NoCertificate {
                host: host.to_string(),
                path: cert_path.to_path_buf(),
            });
        };
        webpki::EndEntityCert::try_from(leaf).map_err(|e| TlsError::BadCertificate {
            host: host.to_string(),
            path: cert_path.to_path_buf(),
            why: format!("{e:?}"),
        })?;
        let fingerprint: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
        // The parse error of a key file would quote nothing of it, but say only that it is not
        // a key: a key file is a secret.
        let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes()).map_err(|_| {
            TlsError::NoKey {
                host: host.to_string(),
                path: key_path.to_path_buf(),
            }
        })?;
        let provider = rustls::crypto::ring::default_provider();
        let signing =
            provider
                .key_provider
                .load_private_key(key)
                .map_err(|e| TlsError::Mismatch {
                    host: host.to_string(),
                    cert: cert_path.to_path_buf(),
                    key: key_path.to_path_buf(),
                    why: format!("the key cannot sign ({e})"),
                })?;
        let certified = rustls::sign::CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| TlsError::Mismatch {
            host: host.to_string(),
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            why: e.to_string(),
        })?;
        Ok(Material {
            chain_pem: cert_pem,
            key_pem,
            fingerprint,
            source: format!("{} (key {})", cert_path.display(), key_path.display()),
        })
    }

    /// Read and check the inventory's files.
    pub fn load(host: &str, cert: &Path, key: &Path) -> Result<Material, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                host: host.to_string(),
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read("tls_cert", cert)?;
        let key_bytes = read("tls_key", key)?;
        let key_pem =
            String::from_utf8(key_bytes)
                .map(Secret::new)
                .map_err(|_| TlsError::NoKey {
                    host: host.to_string(),
                    path: key.to_path_buf(),
                })?;
        Material::from_pem(host, cert, cert_pem, key, key_pem)
    }

    /// `--self-signed`: the certificate made for this host on an earlier run, else a new one
    /// (names: the host's inventory name and address), kept in `dir/HOST/` (key 0600) so a
    /// second run uploads the same one.
    pub fn self_signed(host: &Host, dir: &Path) -> Result<Material, TlsError> {
        let err = |what: String, why: String| TlsError::SelfSigned {
            host: host.name.clone(),
            what,
            why,
        };
        // The host name becomes a directory name: only plain ones.
        let plain = !host.name.is_empty()
            && host.name != "."
            && host.name != ".."
            && host
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !plain {
            return Err(err(
                "host name".into(),
                "only letters, digits, '.', '_' and '-' can name its certificate directory; \
                 give tls_cert/tls_key instead"
                    .into(),
            ));
        }
        let d = dir.join(&host.name);
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
        if cert.is_file() && key.is_file() {
            return Material::load(&host.name, &cert, &key);
        }
        let mut names = vec![host.name.clone()];
        if host.address != host.name {
            names.push(host.address.clone());
        }
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| err("making the certificate".into(), e.to_string()))?;
        let cert_pem = made.cert.pem();
        let key_pem = Secret::new(made.signing_key.serialize_pem());
        write_private(&d, &cert, cert_pem.as_bytes(), 0o644)
            .and_then(|_| write_private(&d, &key, key_pem.expose().as_bytes(), 0o600))
            .map_err(|e| err(format!("writing {}", d.display()), e.to_string()))?;
        Material::from_pem(&host.name, &cert, cert_pem.into_bytes(), &key, key_pem)
    }

    /// `agent.pem`: the chain, then the key (the layout of FreeSWITCH's own gentls_cert).
    fn agent_pem(&self) -> Vec<u8> {
        let mut out = self.chain_pem.clone();
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.extend_from_slice(self.key_pem.expose().as_bytes());
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out
    }

    fn cafile_pem(&self) -> Vec<u8> {
        let mut out = self.chain_pem.clone();
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out
    }
}

/// Create `path` with `mode` in `dir` (0700, created if missing), never through a link.
fn write_private(dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// `AB:CD:...`, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint_hex(fp: &[u8; 32]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What a PEM file on the host holds, for a diff: its first certificate's fingerprint and
/// whether a key is there, never any of its bytes.
fn summary(bytes: Option<&[u8]>) -> String {
    let Some(bytes) = bytes else {
        return "(absent)".into();
    };
    let cert = CertificateDer::pem_slice_iter(bytes)
        .next()
        .and_then(Result::ok)
        .map(|c| {
            let fp: [u8; 32] = Sha256::digest(c.as_ref()).into();
            format!("certificate SHA-256 {}", fingerprint_hex(&fp))
        })
        .unwrap_or_else(|| "no certificate".into());
    let key = if PrivateKeyDer::from_pem_slice(bytes).is_ok() {
        " + private key (not shown)"
    } else {
        ""
    };
    format!("{cert}{key}")
}

// ---------------------------------------------------------------------------------------------
// The plan

/// What `apply` checks once the profiles restarted: a handshake on each TLS port.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    pub address: String,
    pub ports: Vec<u16>,
    pub fingerprint: [u8; 32],
}

/// Where the material comes from for this host: the inventory's files, `--self-signed`, or
/// nothing (the step is skipped).
fn material(input: &PlanInput<'_>) -> Result<Option<Material>, TlsError> {
    let h = input.host;
    match (&h.tls_cert, &h.tls_key, &input.opts.self_signed) {
        (Some(c), Some(k), _) => Material::load(&h.name, c, k).map(Some),
        (Some(_), None, _) => Err(TlsError::Half {
            host: h.name.clone(),
            missing: "tls_key",
        }),
        (None, Some(_), _) => Err(TlsError::Half {
            host: h.name.clone(),
            missing: "tls_cert",
        }),
        (None, None, Some(dir)) => Material::self_signed(h, dir).map(Some),
        (None, None, None) => Ok(None),
    }
}

/// The plan: files, vars.xml edits, restarts and the handshake to check.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan<Option<Verify>>, StepError> {
    let Some(m) = material(input)? else {
        return Ok(Plan {
            outline: StepPlan {
                warnings: vec![
                    "skipped: no certificate for this host (set tls_cert and tls_key in the \
                     inventory, or --self-signed for a test certificate); SIP stays without \
                     TLS (FS-SIP-07)"
                        .into(),
                ],
                ..StepPlan::default()
            },
            action: None,
        });
    };
    plan_with(input, &m)
}

/// The plan for this certificate (pure).
pub fn plan_with(input: &PlanInput<'_>, m: &Material) -> Result<Plan<Option<Verify>>, StepError> {
    let f = input.facts;
    let conf_dir = f
        .files
        .conf_dir
        .clone()
        .ok_or_else(|| StepError::Refused("no FreeSWITCH configuration found".into()))?;
    let Some((fs_user, fs_group)) = f.fs_owner() else {
        return Err(StepError::Refused(
            "FreeSWITCH is not running, so its user is unknown: the key file must be readable by \
             it alone; start FreeSWITCH and re-run"
                .into(),
        ));
    };
    let mut out = StepPlan::default();

    // vars.xml, on top of what the steps before plan for it.
    let vars_path = format!("{conf_dir}/vars.xml");
    let text = input
        .bytes_now(&vars_path)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| {
            StepError::Refused(format!(
                "{vars_path} is missing, too large or not UTF-8 text; fsfleet will not edit it"
            ))
        })?
        .to_string();
    let mut new = text.clone();
    let mut set = Vec::new();
    for var in ENABLE_VARS {
        match vars::get_var(&new, var) {
            Some(v) if model::switch_true(&v) => {}
            Some(_) => {
                if let Some(next) =
                    vars::set_var(&new, var, "true").map_err(|source| StepError::Edit {
                        path: vars_path.clone(),
                        source,
                    })?
                {
                    new = next;
                    set.push(format!("{var}=true"));
                }
            }
            None => out.warnings.push(format!(
                "{vars_path} does not set {var}: its profile's TLS is as its own file says \
                 (fsfleet adds no variable; where it goes is the operator's choice)"
            )),
        }
    }
    let version_changes = match vars::get_var(&new, VERSION_VAR) {
        Some(v) if v == VERSION => false,
        Some(_) => {
            if let Some(next) =
                vars::set_var(&new, VERSION_VAR, VERSION).map_err(|source| StepError::Edit {
                    path: vars_path.clone(),
                    source,
                })?
            {
                new = next;
                set.push(format!("{VERSION_VAR}={VERSION}"));
                true
            } else {
                false
            }
        }
        None => {
            out.warnings.push(format!(
                "{vars_path} does not set {VERSION_VAR}: the profiles' tls-version is as their \
                 files say (check it allows no version below TLS 1.2)"
            ));
            false
        }
    };
    if !set.is_empty() {
        out.changes
            .push(format!("set {} in {vars_path}", set.join(", ")));
        // vars.xml holds default_password: masked in the diff, as every step's.
        let secrets: Vec<Secret> = [vars::get_var(&text, "default_password")]
            .into_iter()
            .chain([f
                .conf_text("vars.xml")
                .ok()
                .and_then(|(_, t)| vars::get_var(t, "default_password"))])
            .flatten()
            .map(Secret::new)
            .collect();
        let refs: Vec<&Secret> = secrets.iter().collect();
        out.diffs
            .push(diff::masked_diff(&vars_path, &text, &new, &refs));
        out.edits
            .extend(input.edit(&vars_path, new.clone().into_bytes(), true)?);
    }

    // The profiles that serve TLS once vars.xml is reloaded.
    let mut after_files: Files = f.files.clone();
    if let Some(v) = after_files.files.get_mut(&vars_path) {
        v.content = Some(new.into_bytes());
    }
    let after = HostModel::of_files(&after_files).sip_profiles();
    let before = HostModel::new(f).sip_profiles();
    let tls_on: Vec<&model::SipProfile> = after.profiles.iter().filter(|p| p.tls).collect();
    if tls_on.is_empty() {
        return Err(StepError::Refused(format!(
            "no SIP profile would serve TLS: none of {} has a `tls` param that is true once \
             vars.xml sets {}; turn it on in the profile you want, then re-run",
            after
                .profiles
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            ENABLE_VARS.join(" and ")
        )));
    }

    // The certificate files, in the same write: in the certs dir, which is where a profile
    // without `tls-cert-dir` reads them. One that names its own dir would not serve them.
    let dir = certs_dir(&conf_dir);
    let own_dirs = HostModel::of_files(&after_files).profile_param("tls-cert-dir");
    let elsewhere: Vec<String> = own_dirs
        .profiles
        .iter()
        .filter(|p| tls_on.iter().any(|t| t.name == p.name && t.file == p.file))
        .filter_map(|p| {
            let v = p.value.as_deref()?.trim().trim_end_matches('/');
            (!v.is_empty() && v != dir).then(|| {
                format!(
                    "{} (tls-cert-dir {})",
                    crate::display::line(&p.name),
                    crate::display::line(v)
                )
            })
        })
        .collect();
    if !elsewhere.is_empty() {
        return Err(StepError::Refused(format!(
            "profile(s) {} read their certificate from their own tls-cert-dir, not {dir} where \
             fsfleet writes agent.pem: remove the param (FreeSWITCH then reads {dir}) or put \
             the certificate there yourself and skip this step",
            elsewhere.join(", ")
        )));
    }
    let agent_path = format!("{dir}/{AGENT}");
    let ca_path = format!("{dir}/{CAFILE}");
    // A missing certs dir (FreeSWITCH creates it when it starts) fails the write, which then
    // changes nothing.
    let mut cert_changed = false;
    for (path, want, mode) in [
        (&agent_path, m.agent_pem(), 0o600),
        (&ca_path, m.cafile_pem(), 0o644),
    ] {
        let now = f.files.files.get(path.as_str());
        let want_meta = Meta {
            user: fs_user.to_string(),
            group: fs_group.to_string(),
            mode,
        };
        let unchanged = now.is_some_and(|n| {
            n.content.as_deref() == Some(want.as_slice()) && Meta::of(n) == want_meta
        });
        if unchanged {
            continue;
        }
        let edit = file_edit(path, now, want, want_meta)?;
        cert_changed |= edit.content_changed();
        out.changes.push(format!(
            "{} {path} ({fs_user}:{fs_group} {mode:04o}): {}",
            if edit.created { "write" } else { "replace" },
            if path.ends_with(AGENT) {
                format!(
                    "certificate SHA-256 {} and its private key",
                    fingerprint_hex(&m.fingerprint)
                )
            } else {
                "the certificate chain".to_string()
            }
        ));
        out.diffs.push(format!(
            "--- {path}\n+++ {path}\n-{}\n+{}\n",
            summary(now.and_then(|n| n.content.as_deref())),
            summary(Some(&edit.new)),
        ));
        out.edits.push(edit);
    }

    // Restart the profiles that serve TLS after the edits but not this certificate now: TLS
    // newly on, a new certificate or TLS version, or (a cut run) TLS on in the files but its
    // port not listening.
    let listening: Vec<u16> = HostModel::new(f)
        .listeners()
        .map(|ls| ls.iter().map(|l| l.port).collect())
        .unwrap_or_default();
    let mut restart = Vec::new();
    for p in &tls_on {
        let was_on = before.profiles.iter().any(|b| b.name == p.name && b.tls);
        let port_moved = !before
            .profiles
            .iter()
            .any(|b| b.name == p.name && b.tls_port == p.tls_port);
        let not_serving = !listening.is_empty() && !listening.contains(&p.tls_port);
        if (!was_on || cert_changed || version_changes || port_moved || not_serving)
            && model::registrations::plain_profile_name(&p.name)
            && !restart.contains(&p.name)
        {
            restart.push(p.name.clone());
        }
    }
    if !restart.is_empty() && out.changes.is_empty() {
        out.changes.push(format!(
            "restart profile(s) {}: TLS is on in their files but FreeSWITCH does not serve it",
            restart.join(", ")
        ));
    } else if !restart.is_empty() {
        out.changes.push(format!(
            "restart profile(s) {} so they serve TLS with this certificate (a rescan does not \
             bind TLS)",
            restart.join(", ")
        ));
    }
    out.reload = reload::Needs {
        restart,
        ..reload::Needs::xml_for(&out.edits)
    };
    let mut ports: Vec<u16> = tls_on.iter().map(|p| p.tls_port).collect();
    ports.sort_unstable();
    ports.dedup();
    let action = (!out.changes.is_empty()).then(|| Verify {
        address: input.host.address.clone(),
        ports,
        fingerprint: m.fingerprint,
    });
    Ok(Plan {
        outline: out,
        action,
    })
}

/// The edit that makes `path` hold `want` (created when absent).
fn file_edit(
    path: &str,
    now: Option<&FileFact>,
    want: Vec<u8>,
    want_meta: Meta,
) -> Result<FileEdit, StepError> {
    match now {
        None => Ok(FileEdit {
            path: path.to_string(),
            old: Vec::new(),
            new: want,
            was: want_meta.clone(),
            want: want_meta,
            created: true,
        }),
        Some(n) => {
            let old = n.content.clone().ok_or_else(|| {
                StepError::Refused(format!(
                    "{path} is too large to be a certificate file; fsfleet will not replace it"
                ))
            })?;
            Ok(FileEdit {
                path: path.to_string(),
                old,
                new: want,
                was: Meta::of(n),
                want: want_meta,
                created: false,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The check: a handshake from the controller

/// Accepts whatever certificate the server shows (fsfleet compares its fingerprint), but checks
/// the handshake's signatures: the server must hold the certificate's private key.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client that accepts whatever certificate the server shows (the caller compares its
/// fingerprint) but checks that the server holds its key.
pub fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
    )
}

/// What a TLS server showed in one handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub fingerprint: [u8; 32],
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connecting to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {target}: {source}")]
    Tls {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: {why}")]
    Other { target: String, why: String },
}

/// One TLS handshake with `address:port`, within `limit`: the server certificate's fingerprint
/// and the protocol version. Nothing is sent after the handshake.
pub async fn handshake(
    address: &str,
    port: u16,
    limit: Duration,
) -> Result<Served, HandshakeError> {
    let target = if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    let other = |why: String| HandshakeError::Other {
        target: target.clone(),
        why,
    };
    let config = client_config().map_err(|e| other(e.to_string()))?;
    let name = ServerName::try_from(address.trim_matches(['[', ']']).to_string())
        .map_err(|e| other(format!("not a server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let run = async {
        let tcp = tokio::net::TcpStream::connect(&target)
            .await
            .map_err(|source| HandshakeError::Connect {
                target: target.clone(),
                source,
            })?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|source| HandshakeError::Tls {
                target: target.clone(),
                source,
            })?;
        let (_, conn) = tls.get_ref();
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| other("the server showed no certificate".into()))?;
        Ok(Served {
            fingerprint: Sha256::digest(leaf.as_ref()).into(),
            version: conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| "?".into()),
        })
    };
    match tokio::time::timeout(limit, run).await {
        Ok(r) => r,
        Err(_) => Err(other(format!("no handshake within {} s", limit.as_secs()))),
    }
}

/// Each TLS port must serve the uploaded certificate. A restarted profile takes a moment to
/// come back (and serves the old certificate until then): tried until [`VERIFY_WITHIN`].
pub async fn verify(v: &Verify) -> Result<Vec<String>, StepError> {
    let want = fingerprint_hex(&v.fingerprint);
    let mut evidence = Vec::new();
    let deadline = tokio::time::Instant::now() + VERIFY_WITHIN;
    for port in &v.ports {
        let mut last;
        loop {
            last = match handshake(&v.address, *port, Duration::from_secs(5)).await {
                Ok(s) if s.fingerprint == v.fingerprint => {
                    evidence.push(format!(
                        "TLS handshake from the controller with {}:{port} ({}): certificate \
                         SHA-256 {want}, the uploaded one",
                        v.address, s.version
                    ));
                    break;
                }
                Ok(s) => format!(
                    "{}:{port} serves certificate SHA-256 {}, not the uploaded {want}",
                    v.address,
                    fingerprint_hex(&s.fingerprint)
                ),
                Err(e) => crate::errors::chain(&e),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(StepError::Failed(format!(
                    "{last} (after {} s; the firewall's sip_allow_from must let this controller \
                     reach the TLS port for the check)",
                    VERIFY_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(evidence)
}

#[cfg(test)]
mod tests;
