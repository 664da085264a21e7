//! What FreeSWITCH reads from its config tree: globals, Event Socket settings, SIP profiles,
//! the user directory and ACL lists. One `Snapshot` is one successful (re)load of the XML.

use crate::acl::AclList;
use crate::xml::{self, Element, Vars, XmlError};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A password: compared and used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where things live on this host.
#[derive(Debug, Clone)]
pub struct Layout {
    pub conf_dir: PathBuf,
    pub log_dir: PathBuf,
}

/// Variables FreeSWITCH sets itself before vars.xml is read.
pub fn core_vars(layout: &Layout, core_uuid: &str) -> Vars {
    let mut v = Vars::new();
    let conf = layout.conf_dir.to_string_lossy().to_string();
    let log = layout.log_dir.to_string_lossy().to_string();
    let ip4 = crate::netinfo::local_ip_v4();
    v.insert("hostname".into(), crate::netinfo::hostname());
    v.insert("local_ip_v4".into(), ip4.to_string());
    if let Some(ip6) = crate::netinfo::local_ip_v6() {
        v.insert("local_ip_v6".into(), ip6.to_string());
    }
    let (_, bits) = crate::netinfo::local_network(ip4);
    v.insert("local_mask_v4".into(), prefix_to_mask(bits));
    v.insert("conf_dir".into(), conf.clone());
    v.insert("log_dir".into(), log);
    v.insert("core_uuid".into(), core_uuid.to_string());
    v.insert("switch_serial".into(), core_uuid.chars().take(8).collect());
    // A source build keeps everything under the parent of conf/; packages use FHS paths.
    let source_base = (layout.conf_dir.file_name().and_then(|n| n.to_str()) == Some("conf"))
        .then(|| {
            layout
                .conf_dir
                .parent()
                .map(|p| p.to_string_lossy().to_string())
        })
        .flatten();
    let dirs: Vec<(&str, String)> = match source_base {
        Some(b) => vec![
            ("base_dir", b.clone()),
            ("mod_dir", format!("{b}/mod")),
            ("run_dir", format!("{b}/run")),
            ("db_dir", format!("{b}/db")),
            ("script_dir", format!("{b}/scripts")),
            ("htdocs_dir", format!("{b}/htdocs")),
            ("grammar_dir", format!("{b}/grammar")),
            ("sounds_dir", format!("{b}/sounds")),
            ("recordings_dir", format!("{b}/recordings")),
            ("storage_dir", format!("{b}/storage")),
            ("cache_dir", format!("{b}/cache")),
            ("images_dir", format!("{b}/images")),
            ("fonts_dir", format!("{b}/fonts")),
            ("certs_dir", format!("{b}/certs")),
            ("data_dir", b.clone()),
            ("localstate_dir", b),
        ],
        None => vec![
            ("base_dir", "/usr".into()),
            ("mod_dir", "/usr/lib/freeswitch/mod".into()),
            ("run_dir", "/var/run/freeswitch".into()),
            ("db_dir", "/var/lib/freeswitch/db".into()),
            ("script_dir", "/usr/share/freeswitch/scripts".into()),
            ("htdocs_dir", "/usr/share/freeswitch/htdocs".into()),
            ("grammar_dir", "/usr/share/freeswitch/grammar".into()),
            ("sounds_dir", "/usr/share/freeswitch/sounds".into()),
            ("recordings_dir", "/var/lib/freeswitch/recordings".into()),
            ("storage_dir", "/var/lib/freeswitch/storage".into()),
            ("cache_dir", "/var/cache/freeswitch".into()),
            ("images_dir", "/var/lib/freeswitch/images".into()),
            ("fonts_dir", "/usr/share/freeswitch/fonts".into()),
            ("certs_dir", format!("{conf}/tls")),
            ("data_dir", "/usr/share/freeswitch".into()),
            ("localstate_dir", "/var/lib/freeswitch".into()),
        ],
    };
    for (k, val) in dirs {
        v.insert(k.into(), val);
    }
    v.insert("temp_dir".into(), "/tmp".into());
    v
}

fn prefix_to_mask(bits: u8) -> String {
    let m: u32 = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits.min(32)))
    };
    std::net::Ipv4Addr::from(m).to_string()
}

/// mod_event_socket settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EslSettings {
    pub listen_ip: String,
    pub listen_port: u16,
    pub password: Secret,
    /// Every list must allow the peer; `loopback.auto` when none is configured.
    pub acls: Vec<String>,
}

impl Default for EslSettings {
    fn default() -> Self {
        EslSettings {
            listen_ip: "127.0.0.1".into(),
            listen_port: 8021,
            password: Secret::new("ClueCon"),
            acls: vec!["loopback.auto".into()],
        }
    }
}

impl EslSettings {
    pub fn from_doc(doc: &Element) -> Self {
        let mut s = EslSettings {
            acls: Vec::new(),
            ..Default::default()
        };
        for settings in doc.find_all("settings") {
            for (name, value) in settings.params() {
                match name.as_str() {
                    "listen-ip" if !value.is_empty() => s.listen_ip = value,
                    "listen-port" => {
                        if let Ok(p) = value.trim().parse() {
                            s.listen_port = p;
                        }
                    }
                    "password" if !value.is_empty() => s.password = Secret::new(value),
                    "apply-inbound-acl" if !value.is_empty() => s.acls.push(value),
                    _ => {}
                }
            }
        }
        if s.acls.is_empty() {
            s.acls.push("loopback.auto".into());
        }
        s
    }
}

/// The parts of a sofia profile the registrar needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConf {
    pub name: String,
    pub file: PathBuf,
    pub sip_ip: String,
    pub sip_port: u16,
    pub log_auth_failures: bool,
    pub force_register_domain: Option<String>,
    /// `inbound-reg-force-matching-username` (stock internal: true): a REGISTER whose digest
    /// username differs from its To user is refused before the directory is searched.
    pub force_matching_username: bool,
    /// The dialplan context of calls no directory `user_context` places (`context` param).
    pub context: String,
    /// `tls` (sofia.c `PFLAG_TLS`): the profile also serves SIP over TLS on `tls_sip_port`.
    pub tls: bool,
    /// `tls-sip-port`, 5061 when absent (sofia.c's default).
    pub tls_sip_port: u16,
    /// `tls-cert-dir`; None: FreeSWITCH's certs dir (`$${certs_dir}`).
    pub tls_cert_dir: Option<String>,
}

impl ProfileConf {
    fn from_element(p: &Element, file: &Path) -> Option<Self> {
        let name = p.attr("name")?.to_string();
        let mut conf = ProfileConf {
            name,
            file: file.to_path_buf(),
            sip_ip: String::new(),
            sip_port: 5060,
            log_auth_failures: false,
            force_register_domain: None,
            force_matching_username: false,
            context: "default".into(),
            tls: false,
            tls_sip_port: 5061,
            tls_cert_dir: None,
        };
        if let Some(settings) = p.child("settings") {
            for (k, v) in settings.params() {
                match k.as_str() {
                    "sip-ip" => conf.sip_ip = v,
                    "sip-port" => conf.sip_port = v.trim().parse().unwrap_or(5060),
                    "log-auth-failures" => conf.log_auth_failures = xml::is_true(&v),
                    "force-register-domain" if !v.is_empty() => {
                        conf.force_register_domain = Some(v)
                    }
                    "context" if !v.is_empty() => conf.context = v,
                    "inbound-reg-force-matching-username" => {
                        conf.force_matching_username = xml::is_true(&v)
                    }
                    "tls" => conf.tls = xml::is_true(&v),
                    "tls-sip-port" => conf.tls_sip_port = v.trim().parse().unwrap_or(5061),
                    "tls-cert-dir" if !v.trim().is_empty() => conf.tls_cert_dir = Some(v),
                    _ => {}
                }
            }
        }
        Some(conf)
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    /// None: the directory gives no password, so FreeSWITCH lets the user register without one.
    pub password: Option<Secret>,
    pub cidr: Option<String>,
    /// The channel variables an authenticated call of this user gets: the domain's
    /// `<variables>`, then the user's (which win), in order.
    pub variables: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// domain name -> users by id
    pub domains: HashMap<String, HashMap<String, User>>,
}

impl Directory {
    pub fn user(&self, domain: &str, id: &str) -> Option<&User> {
        self.domains.get(domain)?.get(id)
    }

    fn add_doc(&mut self, doc: &Element) {
        for d in doc.find_all("domain") {
            let Some(name) = d.attr("name") else { continue };
            let users = self.domains.entry(name.to_string()).or_default();
            let domain_vars = variables(d);
            for u in d.find_all("user") {
                let Some(id) = u.attr("id") else { continue };
                if u.attr("type") == Some("pointer") {
                    continue;
                }
                let password = u
                    .child("params")
                    .and_then(|p| p.params().into_iter().find(|(k, _)| k == "password"))
                    .map(|(_, v)| Secret::new(v));
                users.insert(
                    id.to_string(),
                    User {
                        id: id.to_string(),
                        password,
                        cidr: u.attr("cidr").map(str::to_string),
                        variables: domain_vars.iter().cloned().chain(variables(u)).collect(),
                    },
                );
            }
        }
    }
}

/// `<variable name= value=>` of an element's own `<variables>`.
fn variables(el: &Element) -> Vec<(String, String)> {
    el.child("variables")
        .map(|v| {
            v.children
                .iter()
                .filter(|c| c.name == "variable")
                .filter_map(|c| Some((c.attr("name")?.to_string(), c.attr("value")?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// One complete read of the config tree.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub vars: Vars,
    pub esl: EslSettings,
    pub profiles: Vec<ProfileConf>,
    pub directory: Directory,
    pub acl_lists: Vec<AclList>,
    /// The `<gateway name=...>`s of the SIP profiles.
    pub gateways: Vec<String>,
    /// The XML dialplan (dialplan/*.xml), read after everything above as freeswitch.xml orders it.
    pub dialplan: crate::dialplan::Dialplan,
    /// Problems worth a log line that did not stop the load.
    pub warnings: Vec<String>,
}

/// Read the tree the way FreeSWITCH's freeswitch.xml orders it: vars.xml first (its `set`s feed
/// everything after), then the ACL and Event Socket configs, the SIP profiles, the directory.
pub fn load(layout: &Layout, base_vars: &Vars) -> Result<Snapshot, XmlError> {
    let conf = &layout.conf_dir;
    let mut vars = base_vars.clone();
    let mut warnings = Vec::new();
    xml::load(&conf.join("vars.xml"), &mut vars)?;

    let acl_path = conf.join("autoload_configs/acl.conf.xml");
    let acl_doc = if acl_path.is_file() {
        Some(xml::load(&acl_path, &mut vars)?)
    } else {
        None
    };

    let esl_path = conf.join("autoload_configs/event_socket.conf.xml");
    let esl = if esl_path.is_file() {
        EslSettings::from_doc(&xml::load(&esl_path, &mut vars)?)
    } else {
        warnings.push(format!(
            "Open of {} failed, using defaults",
            esl_path.display()
        ));
        EslSettings::default()
    };

    let mut profiles: Vec<ProfileConf> = Vec::new();
    let mut gateways = Vec::new();
    for file in xml::glob(&conf.join("sip_profiles"), "*.xml") {
        let doc = xml::load(&file, &mut vars)?;
        for p in doc.find_all("profile") {
            gateways.extend(
                p.find_all("gateway")
                    .into_iter()
                    .filter_map(|g| g.attr("name").map(str::to_string)),
            );
            if let Some(pc) = ProfileConf::from_element(p, &file) {
                if profiles.iter().any(|o| o.name == pc.name) {
                    warnings.push(format!(
                        "Profile [{}] in {} is defined twice, ignoring the second",
                        pc.name,
                        file.display()
                    ));
                } else {
                    profiles.push(pc);
                }
            }
        }
    }

    let mut directory = Directory::default();
    for file in xml::glob(&conf.join("directory"), "*.xml") {
        directory.add_doc(&xml::load(&file, &mut vars)?);
    }

    let acl_lists = crate::acl::build_lists(acl_doc.as_ref(), &vars, &directory);
    let dialplan = crate::dialplan::Dialplan::load(conf, &mut vars)?;
    Ok(Snapshot {
        vars,
        esl,
        profiles,
        directory,
        acl_lists,
        gateways,
        dialplan,
        warnings,
    })
}

/// The modules FreeSWITCH loads at startup: every live `<load module=...>` of
/// autoload_configs/modules.conf.xml, in order (commented lines are not elements). No file: none.
pub fn startup_modules(layout: &Layout, base_vars: &Vars) -> Result<Vec<String>, XmlError> {
    let path = layout.conf_dir.join("autoload_configs/modules.conf.xml");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let mut vars = base_vars.clone();
    let doc = xml::load(&path, &mut vars)?;
    Ok(doc
        .find_all("load")
        .into_iter()
        .filter_map(|l| l.attr("module").map(str::to_string))
        .collect())
}

/// Copy a directory tree (tests build config trees from the stock one).
#[cfg(test)]
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The stock tree shipped with the project: `$FS_STOCK_CONF`, else found by walking up from `from`.
pub fn find_stock_tree(from: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FS_STOCK_CONF") {
        return Some(PathBuf::from(p));
    }
    let mut dir = Some(from);
    while let Some(d) = dir {
        let cand = d.join("shared/reference/freeswitch-conf-1.10.12");
        if cand.join("vars.xml").is_file() {
            return Some(cand);
        }
        dir = d.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock() -> PathBuf {
        find_stock_tree(Path::new(env!("CARGO_MANIFEST_DIR")))
            .expect("stock tree: set FS_STOCK_CONF or keep shared/reference above the crate")
    }

    #[test]
    fn stock_tree_loads_like_freeswitch() {
        let layout = Layout {
            conf_dir: stock(),
            log_dir: "/var/log/freeswitch".into(),
        };
        let mut base = Vars::new();
        base.insert("local_ip_v4".into(), "10.9.8.7".into());
        let snap = load(&layout, &base).unwrap();
        assert_eq!(snap.vars["default_password"], "1234");
        assert_eq!(snap.vars["domain"], "10.9.8.7");
        assert_eq!(snap.vars["domain_name"], "10.9.8.7");
        assert_eq!(snap.vars["internal_sip_port"], "5060");
        // XX-PRE-PROCESS is not a preprocessor line.
        assert!(!snap.vars.contains_key("digits_dialed_filter"));

        assert_eq!(snap.esl.listen_ip, "::");
        assert_eq!(snap.esl.listen_port, 8021);
        assert_eq!(snap.esl.password.expose(), "ClueCon");
        assert_eq!(snap.esl.acls, vec!["loopback.auto".to_string()]);

        let names: Vec<&str> = snap.profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["external-ipv6", "external", "internal-ipv6", "internal"]
        );
        let internal = snap.profiles.iter().find(|p| p.name == "internal").unwrap();
        assert_eq!(internal.sip_port, 5060);
        assert_eq!(internal.sip_ip, "10.9.8.7");
        assert!(!internal.log_auth_failures);
        assert_eq!(internal.force_register_domain.as_deref(), Some("10.9.8.7"));
        assert!(internal.force_matching_username);
        let external = snap.profiles.iter().find(|p| p.name == "external").unwrap();
        assert_eq!(external.sip_port, 5080);
        assert!(!external.log_auth_failures);
        assert!(!external.force_matching_username);
        // No local_ip_v6 var given: the IPv6 profiles get an empty sip-ip.
        let v6 = snap
            .profiles
            .iter()
            .find(|p| p.name == "internal-ipv6")
            .unwrap();
        assert_eq!(v6.sip_ip, "");

        let u = snap.directory.user("10.9.8.7", "1000").unwrap();
        assert_eq!(u.password.as_ref().unwrap().expose(), "1234");
        assert_eq!(
            snap.directory
                .user("10.9.8.7", "brian")
                .unwrap()
                .cidr
                .as_deref(),
            Some("192.0.2.0/24")
        );
        assert!(
            snap.directory
                .user("10.9.8.7", "default")
                .unwrap()
                .password
                .is_none()
        );
        assert!(snap.directory.user("10.9.8.7", "1019").is_some());
        assert!(snap.directory.user("10.9.8.7", "1020").is_none());
        // The provider user's password is its own param, not its gateway's.
        assert_eq!(
            snap.directory
                .user("10.9.8.7", "example.com")
                .unwrap()
                .password
                .as_ref()
                .unwrap()
                .expose(),
            "password"
        );
    }

    #[test]
    fn esl_settings_defaults_and_overrides() {
        let doc = xml::parse(
            r#"<configuration><settings>
            <param name="listen-ip" value=""/>
            <param name="password" value=""/>
            <!--<param name="apply-inbound-acl" value="any_v4.auto"/>-->
            </settings></configuration>"#,
            Path::new("e.xml"),
        )
        .unwrap();
        let s = EslSettings::from_doc(&doc);
        assert_eq!(s.listen_ip, "127.0.0.1");
        assert_eq!(s.password.expose(), "ClueCon");
        assert_eq!(s.acls, vec!["loopback.auto".to_string()]);
        let doc = xml::parse(
            r#"<settings><param name="listen-port" value="8022"/>
            <param name="apply-inbound-acl" value="lan"/><param name="password" value="s3cret"/></settings>"#,
            Path::new("e.xml"),
        )
        .unwrap();
        let s = EslSettings::from_doc(&doc);
        assert_eq!(
            (s.listen_port, s.acls.clone()),
            (8022, vec!["lan".to_string()])
        );
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
