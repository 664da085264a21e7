//! The running switch: what was read from disk, what has been applied, and the log.

use crate::config::{self, Layout, Snapshot};
use crate::logfile::{CpuIdle, Level, Logger};
use crate::xml::{Vars, XmlError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::{Notify, watch};

/// A SIP profile that was started (bound its socket).
#[derive(Debug, Clone)]
pub struct RunningProfile {
    pub name: String,
    pub url: String,
}

#[derive(Debug)]
struct State {
    /// The XML as of the last successful read (startup, reloadxml, reload).
    snap: Arc<Snapshot>,
    /// log-auth-failures per profile as of its last start or rescan: the XML alone never changes it.
    log_auth_failures: HashMap<String, bool>,
    running: Vec<RunningProfile>,
    /// mod_sofia's sip_registrations: kept across reloadxml and rescans, as the real table is.
    registrations: crate::registrations::Table,
    /// Modules loaded: modules.conf.xml's `<load module=...>` as read at startup (FreeSWITCH
    /// reads that file only then), less those `unload` took out.
    modules: Vec<String>,
    /// The sessions up now (answered calls), by SIP Call-ID. They belong to the core, as
    /// switch_core_session's do: reloadxml, a profile rescan and `reload mod_event_socket` leave
    /// them up; only a BYE ends one.
    calls: HashMap<String, Call>,
    /// `status`'s session counters: created since startup, and the most up at once.
    sessions_since_startup: u64,
    sessions_peak: u64,
}

/// One answered call (a session with its SIP dialog).
#[derive(Debug, Clone)]
pub struct Call {
    pub uuid: String,
    pub profile: String,
    /// The authenticated caller (digest username) and the number it called.
    pub caller: String,
    pub destination: String,
    pub network: std::net::SocketAddr,
    pub created: std::time::SystemTime,
}

/// `status`'s session counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sessions {
    pub since_startup: u64,
    pub now: u64,
    pub peak: u64,
}

#[derive(Debug)]
pub struct Core {
    pub layout: Layout,
    pub log: Logger,
    pub cpu: CpuIdle,
    pub started: Instant,
    pub core_uuid: String,
    base_vars: Vars,
    state: Mutex<State>,
    /// `reload mod_event_socket` asks the Event Socket supervisor to restart.
    pub esl_reload: Notify,
    /// Bumped when the Event Socket shuts down: every client says goodbye and closes.
    pub esl_generation: watch::Sender<u64>,
}

impl Core {
    /// Read the tree once, as FreeSWITCH does on startup.
    pub fn start(layout: Layout, log: Logger, cpu: CpuIdle) -> Result<Arc<Core>, XmlError> {
        let core_uuid = new_uuid();
        let base_vars = config::core_vars(&layout, &core_uuid);
        Self::with_vars(layout, log, cpu, base_vars, core_uuid)
    }

    pub fn with_vars(
        layout: Layout,
        log: Logger,
        cpu: CpuIdle,
        base_vars: Vars,
        core_uuid: String,
    ) -> Result<Arc<Core>, XmlError> {
        let snap = config::load(&layout, &base_vars)?;
        let modules = config::startup_modules(&layout, &base_vars)?;
        let log_auth_failures = snap
            .profiles
            .iter()
            .map(|p| (p.name.clone(), p.log_auth_failures))
            .collect();
        let (esl_generation, _) = watch::channel(0);
        let core = Arc::new(Core {
            layout,
            log,
            cpu,
            started: Instant::now(),
            core_uuid,
            base_vars,
            state: Mutex::new(State {
                snap: Arc::new(snap),
                log_auth_failures,
                running: Vec::new(),
                registrations: Default::default(),
                modules,
                calls: HashMap::new(),
                sessions_since_startup: 0,
                sessions_peak: 0,
            }),
            esl_reload: Notify::new(),
            esl_generation,
        });
        core.log_warnings();
        Ok(core)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.lock().snap.clone()
    }

    fn log_warnings(&self) {
        for w in &self.snapshot().warnings {
            self.log.log(Level::Warning, "switch_xml.c:1693", w);
        }
    }

    /// `reloadxml`: re-read everything; a broken tree leaves the previous one in force.
    pub fn reload_xml(&self) -> Result<(), XmlError> {
        match config::load(&self.layout, &self.base_vars) {
            Ok(snap) => {
                self.lock().snap = Arc::new(snap);
                self.log_warnings();
                Ok(())
            }
            Err(e) => {
                self.log.log(
                    Level::Error,
                    "switch_xml.c:2357",
                    &format!("Error reloading XML: {e}"),
                );
                Err(e)
            }
        }
    }

    pub fn global_var(&self, name: &str) -> Option<String> {
        self.snapshot().vars.get(name).cloned()
    }

    pub fn log_auth_failures(&self, profile: &str) -> bool {
        self.lock()
            .log_auth_failures
            .get(profile)
            .copied()
            .unwrap_or(false)
    }

    /// `sofia profile NAME rescan`: like mod_sofia, reload the XML from disk first (the reply's
    /// `Reload XML [Success]`), then apply the profile's settings. False when no such profile
    /// is running.
    pub fn rescan(&self, profile: &str) -> bool {
        if !self.lock().running.iter().any(|p| p.name == profile) {
            return false;
        }
        // A broken file is logged by reload_xml; the profile then keeps the last good settings.
        let _ = self.reload_xml();
        let mut st = self.lock();
        if !st.running.iter().any(|p| p.name == profile) {
            return false;
        }
        if let Some(p) = st.snap.profiles.iter().find(|p| p.name == profile) {
            let v = p.log_auth_failures;
            st.log_auth_failures.insert(profile.to_string(), v);
        }
        true
    }

    pub fn set_running(&self, p: RunningProfile) {
        self.lock().running.push(p);
    }

    pub fn running_profiles(&self) -> Vec<RunningProfile> {
        self.lock().running.clone()
    }

    /// A REGISTER that authenticated (expires_in 0: the phone unregisters).
    pub fn register(&self, reg: crate::registrations::Registration, expires_in: u64) {
        self.lock().registrations.upsert(reg, expires_in);
    }

    /// The live registrations of a profile.
    pub fn registrations(&self, profile: &str) -> Vec<crate::registrations::Registration> {
        self.lock().registrations.of_profile(profile)
    }

    /// An answered INVITE: a new session, unless this Call-ID has one (a retransmission).
    pub fn answer_call(&self, call_id: &str, call: Call) {
        let mut st = self.lock();
        if st.calls.contains_key(call_id) {
            return;
        }
        st.calls.insert(call_id.to_string(), call);
        st.sessions_since_startup += 1;
        st.sessions_peak = st.sessions_peak.max(st.calls.len() as u64);
    }

    /// A BYE: the session of this Call-ID ends. False when there is none (sofia answers 481).
    pub fn hangup_call(&self, call_id: &str) -> bool {
        self.lock().calls.remove(call_id).is_some()
    }

    /// Every session ends at once (FreeSWITCH's `hupall`, or a crash): how many there were.
    pub fn hangup_all(&self) -> usize {
        let mut st = self.lock();
        let n = st.calls.len();
        st.calls.clear();
        n
    }

    /// The sessions up now, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        let mut v: Vec<Call> = self.lock().calls.values().cloned().collect();
        v.sort_by_key(|c| c.created);
        v
    }

    pub fn sessions(&self) -> Sessions {
        let st = self.lock();
        Sessions {
            since_startup: st.sessions_since_startup,
            now: st.calls.len() as u64,
            peak: st.sessions_peak,
        }
    }

    /// `module_exists NAME`.
    pub fn module_loaded(&self, name: &str) -> bool {
        self.lock().modules.iter().any(|m| m == name)
    }

    /// `unload NAME`: Err with FreeSWITCH's reason when no such module is loaded.
    pub fn unload_module(&self, name: &str) -> Result<(), &'static str> {
        let mut st = self.lock();
        let before = st.modules.len();
        st.modules.retain(|m| m != name);
        if st.modules.len() == before {
            return Err("No such module!");
        }
        Ok(())
    }

    /// Drop every Event Socket client with the shutdown notice.
    pub fn drop_esl_clients(&self) {
        self.esl_generation.send_modify(|g| *g += 1);
    }
}

/// A random (version 4) UUID, FreeSWITCH's usual id format.
pub fn new_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let mut b = b;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A core over `conf_dir` with loopback as the local address and the log in `log_dir`.
#[cfg(test)]
pub fn test_core(conf_dir: &std::path::Path, log_dir: &std::path::Path) -> Arc<Core> {
    let layout = Layout {
        conf_dir: conf_dir.to_path_buf(),
        log_dir: log_dir.to_path_buf(),
    };
    let mut vars = Vars::new();
    vars.insert("local_ip_v4".into(), "127.0.0.1".into());
    vars.insert("conf_dir".into(), conf_dir.to_string_lossy().to_string());
    let cpu = CpuIdle::new();
    let log = Logger::new(log_dir.join("freeswitch.log"), cpu.clone());
    Core::with_vars(layout, log, cpu, vars, new_uuid()).expect("test config tree loads")
}
