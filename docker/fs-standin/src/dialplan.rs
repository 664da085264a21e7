//! The XML dialplan, hunted and run the way FreeSWITCH 1.10.12 does for an authenticated call, as
//! far as the SIP answer to the INVITE goes.
//!
//! Hunting follows mod_dialplan_xml.c (`dialplan_hunt`, `parse_exten`): the context named by the
//! caller (else `global`), its extensions in document order; in each, the conditions in order, a
//! condition with a `field` passing when its regex `expression` matches the field (a caller
//! profile field such as `destination_number`, or `${var}` expanded from the channel's variables,
//! then the global ones), one without a field passing on its date/time attributes (none: always);
//! `break` = on-false (default) / on-true / always / never decides whether the next condition is
//! looked at; the actions of a passing condition (anti-actions of a failing one) are appended to the
//! call's one application list, with `$1`.. from the condition's regex; an extension whose last
//! condition looked at passed (or ran anti-actions) ends the hunt unless it has `continue="true"`.
//!
//! Running the list stops at the first application that decides the INVITE's answer:
//! - `answer`: 200 (the call is up until the phone's BYE; what runs after answer is not modelled);
//! - `bridge`: to a `sofia/gateway/NAME/...` whose gateway is not configured, mod_sofia's
//!   `sofia_outgoing_channel` fails with INVALID_GATEWAY; to a profile that is not running,
//!   INVALID_PROFILE; to `user/ID@DOMAIN` with no such directory user SUBSCRIBER_ABSENT, one not
//!   registered USER_NOT_REGISTERED (its dial-string's `sofia_contact` gives
//!   `error/user_not_registered`); `error/CAUSE` that cause. A failed bridge hangs the caller up
//!   with its cause unless `continue_on_fail` is true or names the cause (mod_dptools'
//!   bridge_function, switch_channel_handle_cause);
//! - `transfer DEST [DIALPLAN [CONTEXT]]` hunts again; the `enum` dialplan (mod_enum loaded) does an
//!   ENUM lookup: the testbed has no ENUM zone to ask, so it finds no record, and mod_enum's
//!   `enum_dialplan_hunt` returns an extension without applications, which ends as NORMAL_CLEARING;
//! - `hangup [CAUSE]`; the end of the list without an answer: NORMAL_CLEARING
//!   (switch_core_state_machine.c: "has executed the last dialplan instruction, hanging up").
//!
//! No extension at all: NO_ROUTE_DESTINATION ("No Route, Aborting"). mod_sofia's
//! `hangup_cause_to_sip` maps the cause to the SIP status, and `sofia_on_hangup` sends it with a
//! `Reason: Q.850;cause=N;text="NAME"` header (`SIP;cause=N` for FreeSWITCH's own causes >= 128).
//! Applications with no effect on the answer (set, export, log, sleep, hash, ...) are skipped: the
//! stand-in does not wait out the stock `global` extension's 10 s sleep. Anything else before an
//! answer (media applications, a bridge that would place a real outbound call) is outside what the
//! stand-in models: the caller gets 480, as the stand-in has always answered calls it does not route.

use crate::xml::{self, Element, Vars, XmlError};
use chrono::{Datelike, Timelike};
use std::collections::HashMap;
use std::path::Path;

/// mod_dialplan_xml's recursion limit for nested conditions; also bounds transfers here.
const MAX_RECUR: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    OnFalse,
    OnTrue,
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    pub data: String,
}

#[derive(Debug, Clone)]
struct Condition {
    field: Option<String>,
    expression: String,
    /// The expression compiled once at load when it holds no `${var}` (the stock tree's all do):
    /// compiling ~150 regexes per call would hold up the registrar.
    compiled: Option<fancy_regex::Regex>,
    brk: Break,
    /// Date/time attributes (wday, hour, ...), checked like switch_xml_std_datetime_check.
    time: Vec<(String, String)>,
    actions: Vec<App>,
    anti_actions: Vec<App>,
    nested: Vec<Condition>,
    require_nested: bool,
}

#[derive(Debug, Clone)]
struct Extension {
    name: String,
    cont: bool,
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
struct Context {
    name: String,
    extensions: Vec<Extension>,
}

/// The dialplan section: every context of dialplan/*.xml (freeswitch.xml includes them all).
#[derive(Debug, Clone, Default)]
pub struct Dialplan {
    contexts: Vec<Context>,
}

impl Dialplan {
    /// Read dialplan/*.xml under `conf_dir` with the global variables as they stand.
    pub fn load(conf_dir: &Path, vars: &mut Vars) -> Result<Dialplan, XmlError> {
        let mut contexts = Vec::new();
        for file in xml::glob(&conf_dir.join("dialplan"), "*.xml") {
            let doc = xml::load(&file, vars)?;
            for c in doc.find_all("context") {
                let Some(name) = c.attr("name") else { continue };
                let mut extensions = Vec::new();
                collect_extensions(c, &mut extensions);
                contexts.push(Context {
                    name: name.to_string(),
                    extensions,
                });
            }
        }
        Ok(Dialplan { contexts })
    }

    fn context(&self, name: &str) -> Option<&Context> {
        // switch_xml_find_child: the first context of that name, else `global`.
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .or_else(|| self.contexts.iter().find(|c| c.name == "global"))
    }
}

/// Extensions in document order; an included file's `<include>` wrapper is transparent, as the
/// preprocessor makes it in FreeSWITCH.
fn collect_extensions(el: &Element, out: &mut Vec<Extension>) {
    for c in &el.children {
        match c.name.as_str() {
            "extension" => out.push(Extension {
                name: c.attr("name").unwrap_or("UNKNOWN").to_string(),
                cont: c.attr("continue").is_some_and(xml::is_true),
                conditions: conditions(c),
            }),
            "include" => collect_extensions(c, out),
            _ => {}
        }
    }
}

fn conditions(el: &Element) -> Vec<Condition> {
    el.children
        .iter()
        .filter(|c| c.name == "condition")
        .map(|c| {
            let apps = |kind: &str| {
                c.children
                    .iter()
                    .filter(|a| a.name == kind)
                    .map(|a| App {
                        name: a.attr("application").unwrap_or("").to_string(),
                        data: a.attr("data").unwrap_or("").to_string(),
                    })
                    .collect()
            };
            let brk = match c.attr("break").map(str::to_ascii_lowercase).as_deref() {
                Some("on-true") => Break::OnTrue,
                Some("always") => Break::Always,
                Some("never") => Break::Never,
                _ => Break::OnFalse,
            };
            let expression = c.attr("expression").unwrap_or("").to_string();
            let compiled = if expression.contains("${") {
                None
            } else {
                fancy_regex::Regex::new(&expression).ok()
            };
            Condition {
                field: c.attr("field").map(str::to_string),
                expression,
                compiled,
                brk,
                time: c
                    .attrs
                    .iter()
                    .filter(|(k, _)| TIME_ATTRS.contains(&k.as_str()))
                    .cloned()
                    .collect(),
                actions: apps("action"),
                anti_actions: apps("anti-action"),
                nested: conditions(c),
                require_nested: c.attr("require-nested").is_none_or(xml::is_true),
            }
        })
        .collect()
}

/// A FreeSWITCH hangup cause: its number and switch_channel_cause2str name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cause(pub u16, pub &'static str);

impl Cause {
    pub const NONE: Cause = Cause(0, "NONE");
    pub const NO_ROUTE_DESTINATION: Cause = Cause(3, "NO_ROUTE_DESTINATION");
    pub const NORMAL_CLEARING: Cause = Cause(16, "NORMAL_CLEARING");
    pub const SUBSCRIBER_ABSENT: Cause = Cause(20, "SUBSCRIBER_ABSENT");
    pub const EXCHANGE_ROUTING_ERROR: Cause = Cause(25, "EXCHANGE_ROUTING_ERROR");
    pub const USER_NOT_REGISTERED: Cause = Cause(606, "USER_NOT_REGISTERED");
    pub const INVALID_GATEWAY: Cause = Cause(608, "INVALID_GATEWAY");
    pub const INVALID_URL: Cause = Cause(610, "INVALID_URL");
    pub const INVALID_PROFILE: Cause = Cause(611, "INVALID_PROFILE");

    /// switch_channel_str2cause: a name (any case) or a number.
    pub fn parse(s: &str) -> Cause {
        let s = s.trim();
        CAUSES
            .iter()
            .copied()
            .find(|c| c.1.eq_ignore_ascii_case(s) || s.parse::<u16>().is_ok_and(|n| n == c.0))
            .unwrap_or(Cause::NONE)
    }

    /// mod_sofia.c hangup_cause_to_sip (RFC 4497 8.4.1), with sofia-sip's reason phrase.
    pub fn sip(self) -> (u16, &'static str) {
        let code = match self.0 {
            1..=3 => 404,
            17 => 486,
            18 => 408,
            19 | 20 | 31 => 480,
            21 => 603,
            22 | 23 => 410,
            27 | 611 => 502,
            28 | 608 | 610 => 484,
            29 | 69 | 79 => 501,
            34 | 38 | 41 | 42 | 44 | 58 | 609 => 503,
            52 | 54 | 57 => 403,
            65 | 88 => 488,
            102 => 504,
            487 => 487,
            25 => 483,
            _ => 480,
        };
        let phrase = match code {
            404 => "Not Found",
            486 => "Busy Here",
            408 => "Request Timeout",
            603 => "Decline",
            410 => "Gone",
            502 => "Bad Gateway",
            484 => "Address Incomplete",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            403 => "Forbidden",
            488 => "Not Acceptable Here",
            504 => "Server Time-out",
            487 => "Request Terminated",
            483 => "Too Many Hops",
            _ => "Temporarily Unavailable",
        };
        (code, phrase)
    }

    /// The Reason header value sofia_on_hangup puts on the final answer.
    pub fn reason(self) -> String {
        if self.0 > 0 && self.0 < 128 {
            format!("Q.850;cause={};text=\"{}\"", self.0, self.1)
        } else {
            format!("SIP;cause={};text=\"{}\"", self.0, self.1)
        }
    }
}

const CAUSES: &[Cause] = &[
    Cause::NONE,
    Cause(1, "UNALLOCATED_NUMBER"),
    Cause(2, "NO_ROUTE_TRANSIT_NET"),
    Cause::NO_ROUTE_DESTINATION,
    Cause::NORMAL_CLEARING,
    Cause(17, "USER_BUSY"),
    Cause(18, "NO_USER_RESPONSE"),
    Cause(19, "NO_ANSWER"),
    Cause::SUBSCRIBER_ABSENT,
    Cause(21, "CALL_REJECTED"),
    Cause(22, "NUMBER_CHANGED"),
    Cause::EXCHANGE_ROUTING_ERROR,
    Cause(27, "DESTINATION_OUT_OF_ORDER"),
    Cause(28, "INVALID_NUMBER_FORMAT"),
    Cause(31, "NORMAL_UNSPECIFIED"),
    Cause(34, "NORMAL_CIRCUIT_CONGESTION"),
    Cause(41, "NORMAL_TEMPORARY_FAILURE"),
    Cause(42, "SWITCH_CONGESTION"),
    Cause(52, "OUTGOING_CALL_BARRED"),
    Cause(102, "RECOVERY_ON_TIMER_EXPIRE"),
    Cause(487, "ORIGINATOR_CANCEL"),
    Cause::USER_NOT_REGISTERED,
    Cause::INVALID_GATEWAY,
    Cause(609, "GATEWAY_DOWN"),
    Cause::INVALID_URL,
    Cause::INVALID_PROFILE,
];

/// How the dialplan answers the INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// `answer` ran: 200, the call stays up.
    Answered { extension: String },
    /// The channel was hung up before answer with this cause.
    HungUp {
        cause: Cause,
        extension: Option<String>,
    },
    /// An application the stand-in does not model decides the call.
    NotModelled { extension: String, app: App },
}

/// What the switch knows about the caller and itself when the call is routed.
pub struct Call<'a> {
    pub destination: &'a str,
    pub caller: &'a str,
    pub context: &'a str,
    /// The caller's directory variables and what mod_sofia sets on an authenticated call.
    pub channel: HashMap<String, String>,
    pub globals: &'a Vars,
    /// Gateways configured on the running profiles, and the running profiles' names.
    pub gateways: &'a [String],
    pub profiles: &'a [String],
    /// Whether `user@domain` is a directory user, and whether it is registered now.
    pub user_exists: &'a dyn Fn(&str, &str) -> bool,
    pub registered: &'a dyn Fn(&str, &str) -> bool,
    /// An api command (`${module_exists(mod_enum)}` runs `module_exists mod_enum`).
    pub api: &'a dyn Fn(&str) -> String,
}

struct Channel<'a> {
    call: &'a Call<'a>,
    vars: HashMap<String, String>,
    destination: String,
    context: String,
}

impl Channel<'_> {
    fn var(&self, name: &str) -> String {
        match name {
            "destination_number" => return self.destination.clone(),
            "context" => return self.context.clone(),
            _ => {}
        }
        self.vars
            .get(name)
            .or_else(|| self.call.globals.get(name))
            .cloned()
            .unwrap_or_default()
    }

    /// switch_caller_get_field_by_name for the fields a condition can name.
    fn field(&self, name: &str) -> String {
        match name {
            "destination_number" => self.destination.clone(),
            "context" => self.context.clone(),
            "caller_id_number" | "caller_id_name" | "username" | "ani" => {
                self.call.caller.to_string()
            }
            "dialplan" => "XML".to_string(),
            "source" => "mod_sofia".to_string(),
            "network_addr" | "uuid" | "chan_name" => self.var(name),
            _ => String::new(),
        }
    }

    /// switch_channel_expand_variables: `${name}` and `${api(args)}`, nested.
    fn expand(&self, s: &str) -> String {
        self.expand_at(s, 0)
    }

    /// Nesting is bounded: a caller's destination reaches here (the stock `enum` extension
    /// transfers `$1`), and unbounded recursion on `${${${...` would overflow the stack.
    fn expand_at(&self, s: &str, level: usize) -> String {
        const MAX_LEVEL: usize = 16;
        if level >= MAX_LEVEL {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let inner = &rest[start + 2..];
            let mut depth = 1;
            let mut end = None;
            for (i, ch) in inner.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                out.push_str(&rest[start..]);
                return out;
            };
            let body = self.expand_at(&inner[..end], level + 1);
            match body.find('(') {
                Some(p) if body.ends_with(')') => {
                    let cmd = format!("{} {}", &body[..p], &body[p + 1..body.len() - 1]);
                    out.push_str((self.call.api)(cmd.trim()).trim_end_matches('\n'));
                }
                _ => out.push_str(&self.var(&body)),
            }
            rest = &inner[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// Route one call: hunt, then run the applications up to the one that decides the answer.
pub fn route(dp: &Dialplan, call: &Call<'_>) -> Routed {
    let mut ch = Channel {
        call,
        vars: call.channel.clone(),
        destination: call.destination.to_string(),
        context: call.context.to_string(),
    };
    let mut dialplan = "XML".to_string();
    for _ in 0..MAX_RECUR {
        let Some((extension, apps)) = hunt(dp, &mut ch, &dialplan) else {
            return Routed::HungUp {
                cause: Cause::NO_ROUTE_DESTINATION,
                extension: None,
            };
        };
        match run(&mut ch, &extension, &apps) {
            Step::Done(r) => return r,
            Step::Transfer {
                dest,
                dialplan: d,
                context,
            } => {
                ch.destination = dest;
                ch.context = context;
                dialplan = d;
            }
        }
    }
    Routed::HungUp {
        cause: Cause::EXCHANGE_ROUTING_ERROR,
        extension: None,
    }
}

/// One dialplan hunt: the extension that ended it (or, when every one continued, the last that
/// added an application) and the application list; None without an application (no route).
fn hunt(dp: &Dialplan, ch: &mut Channel<'_>, dialplan: &str) -> Option<(String, Vec<App>)> {
    if dialplan.eq_ignore_ascii_case("enum") {
        // mod_enum's dialplan, when the module is loaded: no ENUM record in the testbed, so an
        // extension named by the number, without applications.
        return ((ch.call.api)("module_exists mod_enum").trim() == "true")
            .then(|| (ch.destination.clone(), Vec::new()));
    }
    if !dialplan.eq_ignore_ascii_case("XML") {
        return None;
    }
    let ctx = dp.context(&ch.context)?;
    let mut apps: Vec<App> = Vec::new();
    let mut name = None;
    for ext in &ctx.extensions {
        let before = apps.len();
        let proceed = parse_exten(ch, &ext.conditions, &mut apps, 0);
        if apps.len() > before {
            name = Some(ext.name.clone());
        }
        if proceed && !ext.cont {
            name = Some(ext.name.clone());
            break;
        }
    }
    // switch_caller_extension_new runs when the first application is added: none, no extension.
    (!apps.is_empty()).then(|| (name.unwrap_or_default(), apps))
}

fn parse_exten(
    ch: &mut Channel<'_>,
    conds: &[Condition],
    apps: &mut Vec<App>,
    recur: usize,
) -> bool {
    if recur > MAX_RECUR {
        return false;
    }
    let mut proceed = false;
    for c in conds {
        let time_match = time_match(&c.time, &chrono::Local::now());
        let mut anti = true;
        if time_match == Some(true) {
            anti = false;
            proceed = true;
        } else if time_match == Some(false) {
            proceed = false;
        }
        let mut captures: Vec<Option<String>> = Vec::new();
        if let Some(field) = &c.field {
            let data = if field.contains('$') {
                ch.expand(field)
            } else {
                ch.field(field)
            };
            let found = match &c.compiled {
                Some(re) => captures_of(re, &data),
                None => regex_match(&ch.expand(&c.expression), &data),
            };
            match found {
                Some(caps) => {
                    proceed = true;
                    anti = false;
                    captures = caps;
                }
                None => proceed = false,
            }
        } else if time_match.is_none() {
            anti = false;
            proceed = true;
        }
        if anti {
            apps.extend(c.anti_actions.iter().cloned());
            if !c.anti_actions.is_empty() {
                proceed = true;
            }
        } else {
            apps.extend(c.actions.iter().map(|a| App {
                name: a.name.clone(),
                data: substitute(&a.data, &captures),
            }));
        }
        if (!anti && c.brk == Break::OnTrue)
            || (anti && c.brk == Break::OnFalse)
            || c.brk == Break::Always
        {
            break;
        }
        if proceed && !c.nested.is_empty() {
            proceed = parse_exten(ch, &c.nested, apps, recur + 1) || !c.require_nested;
            if !proceed {
                if c.brk == Break::Never {
                    continue;
                }
                return false;
            }
        }
    }
    proceed
}

/// PCRE-compatible matching (FreeSWITCH uses PCRE: the stock tree has a `(?!...)` lookahead).
/// The captures, or None: no match, or an expression that does not compile (switch_regex_perform
/// then reports no match too).
fn regex_match(expr: &str, data: &str) -> Option<Vec<Option<String>>> {
    captures_of(&fancy_regex::Regex::new(expr).ok()?, data)
}

fn captures_of(re: &fancy_regex::Regex, data: &str) -> Option<Vec<Option<String>>> {
    let caps = re.captures(data).ok()??;
    Some(
        caps.iter()
            .map(|m| m.map(|m| m.as_str().to_string()))
            .collect(),
    )
}

/// switch_perform_substitution: `$1`..`$9` from the condition's captures.
fn substitute(data: &str, caps: &[Option<String>]) -> String {
    if caps.is_empty() {
        return data.to_string();
    }
    let mut out = String::with_capacity(data.len());
    let mut chars = data.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$'
            && let Some(d) = chars.peek().and_then(|d| d.to_digit(10))
        {
            chars.next();
            if let Some(Some(s)) = caps.get(d as usize) {
                out.push_str(s);
            }
            continue;
        }
        out.push(c);
    }
    out
}

const TIME_ATTRS: &[&str] = &[
    "year",
    "yday",
    "mon",
    "mday",
    "week",
    "mweek",
    "wday",
    "hour",
    "minute",
    "minute-of-day",
    "time-of-day",
    "date-time",
];

/// switch_xml_std_datetime_check: None without date/time attributes, else whether all match.
fn time_match<T: Datelike + Timelike>(attrs: &[(String, String)], now: &T) -> Option<bool> {
    if attrs.is_empty() {
        return None;
    }
    let wday0 = now.weekday().num_days_from_sunday();
    let mday = now.day();
    let first_wday = (wday0 + 35 - (mday - 1) % 7) % 7;
    let sod = now.hour() * 3600 + now.minute() * 60 + now.second();
    let all = attrs.iter().all(|(k, v)| {
        let n = match k.as_str() {
            "year" => now.year() as u32,
            "yday" => now.ordinal(),
            "mon" => now.month(),
            "mday" => mday,
            "week" => now.ordinal0() / 7 + 1,
            "mweek" => (mday - 1 + first_wday) / 7 + 1,
            "wday" => wday0 + 1,
            "hour" => now.hour(),
            "minute" => now.minute(),
            "minute-of-day" => now.hour() * 60 + now.minute() + 1,
            "time-of-day" => return time_of_day(v, sod),
            // An absolute date range: not something a test call depends on; never matches.
            _ => return false,
        };
        number_cmp(v, n, k == "wday")
    });
    Some(all)
}

/// switch_number_cmp: `a`, `a-b` (wrapping when a > b), comma lists; wday names allowed.
fn number_cmp(spec: &str, n: u32, wday: bool) -> bool {
    let num = |s: &str| -> Option<u32> {
        let s = s.trim();
        if wday {
            let days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
            if let Some(i) = days.iter().position(|d| s.eq_ignore_ascii_case(d)) {
                return Some(i as u32 + 1);
            }
        }
        s.parse().ok()
    };
    spec.split(',').any(|part| match part.split_once('-') {
        Some((a, b)) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a <= b => (a..=b).contains(&n),
            (Some(a), Some(b)) => n >= a || n <= b,
            _ => false,
        },
        None => num(part) == Some(n),
    })
}

fn time_of_day(spec: &str, sod: u32) -> bool {
    let secs = |s: &str| -> Option<u32> {
        let mut it = s.trim().split(':').map(|p| p.parse::<u32>().ok());
        let (h, m) = (it.next()??, it.next()??);
        let sec = it.next().flatten().unwrap_or(0);
        Some(h * 3600 + m * 60 + sec)
    };
    spec.split(',').any(|part| {
        let Some((a, b)) = part.split_once('-') else {
            return false;
        };
        match (secs(a), secs(b)) {
            (Some(a), Some(b)) if a <= b => (a..=b).contains(&sod),
            (Some(a), Some(b)) => sod >= a || sod <= b,
            _ => false,
        }
    })
}

enum Step {
    Done(Routed),
    Transfer {
        dest: String,
        dialplan: String,
        context: String,
    },
}

/// Applications that do not change the SIP answer to the INVITE (no answer, no hangup, no
/// final response; ring_ready and acknowledge_call send only provisional answers).
const NO_EFFECT: &[&str] = &[
    "log",
    "sleep",
    "hash",
    "info",
    "bind_meta_app",
    "eval",
    "ring_ready",
    "acknowledge_call",
    "push",
];

fn run(ch: &mut Channel<'_>, extension: &str, apps: &[App]) -> Step {
    let done = |r| Step::Done(r);
    for app in apps {
        match app.name.as_str() {
            "answer" => {
                return done(Routed::Answered {
                    extension: extension.to_string(),
                });
            }
            "set" | "export" => {
                let data = ch.expand(&app.data);
                // `export nolocal:` sets the variable on the other leg only.
                if data.starts_with("nolocal:") {
                    continue;
                }
                if let Some((k, v)) = data.split_once('=') {
                    ch.vars.insert(k.trim().to_string(), v.to_string());
                }
            }
            "unset" => {
                let name = ch.expand(&app.data);
                ch.vars.remove(name.trim());
            }
            "bridge" => match bridge(ch, &ch.expand(&app.data)) {
                Ok(()) => {
                    return done(Routed::NotModelled {
                        extension: extension.to_string(),
                        app: app.clone(),
                    });
                }
                Err(cause) if continue_on_fail(&ch.var("continue_on_fail"), cause) => {}
                Err(cause) => {
                    return done(Routed::HungUp {
                        cause,
                        extension: Some(extension.to_string()),
                    });
                }
            },
            "transfer" => {
                let data = ch.expand(&app.data);
                let mut parts = data.split_whitespace();
                let Some(dest) = parts.next() else { continue };
                return Step::Transfer {
                    dest: dest.to_string(),
                    dialplan: parts.next().unwrap_or("XML").to_string(),
                    context: parts
                        .next()
                        .map_or_else(|| ch.context.clone(), str::to_string),
                };
            }
            "hangup" => {
                let data = ch.expand(&app.data);
                let cause = if data.trim().is_empty() {
                    Cause::NORMAL_CLEARING
                } else {
                    Cause::parse(&data)
                };
                return done(Routed::HungUp {
                    cause,
                    extension: Some(extension.to_string()),
                });
            }
            name if NO_EFFECT.contains(&name) => {}
            _ => {
                return done(Routed::NotModelled {
                    extension: extension.to_string(),
                    app: app.clone(),
                });
            }
        }
    }
    done(Routed::HungUp {
        cause: Cause::NORMAL_CLEARING,
        extension: Some(extension.to_string()),
    })
}

/// switch_channel_handle_cause: `continue_on_fail` true, or a list naming the cause.
fn continue_on_fail(v: &str, cause: Cause) -> bool {
    xml::is_true(v)
        || v.split(',').any(|c| {
            let c = c.trim();
            !c.is_empty() && (c.eq_ignore_ascii_case(cause.1) || c == cause.0.to_string())
        })
}

/// Try each endpoint of a dial string; Ok when one would place a real call (not modelled), else
/// the last failure's cause.
fn bridge(ch: &Channel<'_>, data: &str) -> Result<(), Cause> {
    let mut last = Cause::INVALID_URL;
    // `{vars}` and `<vars>` before the dial string apply to every leg; `|` is failover, `,`
    // simultaneous: either way the call fails only when every leg fails.
    let mut s = data.trim();
    while let Some(rest) = s
        .strip_prefix('{')
        .and_then(|r| r.split_once('}'))
        .or_else(|| s.strip_prefix('<').and_then(|r| r.split_once('>')))
        .map(|(_, rest)| rest)
    {
        s = rest.trim_start();
    }
    for leg in s.split(['|', ',']) {
        let mut leg = leg.trim();
        if let Some((_, rest)) = leg.strip_prefix('[').and_then(|r| r.split_once(']')) {
            leg = rest.trim();
        }
        match endpoint(ch, leg) {
            Ok(()) => return Ok(()),
            Err(c) => last = c,
        }
    }
    Err(last)
}

fn endpoint(ch: &Channel<'_>, leg: &str) -> Result<(), Cause> {
    let (tech, rest) = leg.split_once('/').ok_or(Cause::INVALID_URL)?;
    match tech {
        "sofia" => {
            if let Some(gw) = rest.strip_prefix("gateway/") {
                // sofia_outgoing_channel: `gateway/NAME/DEST`, NAME a configured gateway.
                let (name, dest) = gw.split_once('/').ok_or(Cause::INVALID_URL)?;
                if !ch.call.gateways.iter().any(|g| g == name) {
                    return Err(Cause::INVALID_GATEWAY);
                }
                if dest.is_empty() {
                    return Err(Cause::INVALID_URL);
                }
                return Ok(());
            }
            let (profile, _) = rest.split_once('/').ok_or(Cause::INVALID_URL)?;
            if ch.call.profiles.iter().any(|p| p == profile) {
                Ok(())
            } else {
                Err(Cause::INVALID_PROFILE)
            }
        }
        "user" => {
            let (id, domain) = match rest.split_once('@') {
                Some((i, d)) => (i.to_string(), d.to_string()),
                None => (rest.to_string(), ch.var("domain_name")),
            };
            if !(ch.call.user_exists)(&id, &domain) {
                Err(Cause::SUBSCRIBER_ABSENT)
            } else if !(ch.call.registered)(&id, &domain) {
                Err(Cause::USER_NOT_REGISTERED)
            } else {
                Ok(())
            }
        }
        "error" => Err(Cause::parse(rest)),
        _ => Ok(()),
    }
}

/// Route an authenticated INVITE from `user@domain` on `profile` as the running switch would: the
/// context is the user's `user_context` variable, else the profile's `context` param (what
/// sofia.c's sofia_handle_sip_i_invite does after the digest check); the caller's directory
/// variables are the channel's.
pub fn route_call(
    core: &crate::core::Core,
    profile: &str,
    user: &str,
    domain: &str,
    dest: &str,
    network: std::net::SocketAddr,
) -> Routed {
    let snap = core.snapshot();
    let mut channel: HashMap<String, String> = snap
        .directory
        .user(domain, user)
        .map(|u| u.variables.iter().cloned().collect())
        .unwrap_or_default();
    for (k, v) in [
        ("domain_name", domain.to_string()),
        ("user_name", user.to_string()),
        ("sofia_profile_name", profile.to_string()),
        ("network_addr", network.ip().to_string()),
        ("chan_name", format!("sofia/{profile}/{user}@{domain}")),
    ] {
        channel.insert(k.to_string(), v);
    }
    let context = channel
        .get("user_context")
        .filter(|c| !c.is_empty())
        .cloned()
        .or_else(|| {
            snap.profiles
                .iter()
                .find(|p| p.name == profile)
                .map(|p| p.context.clone())
        })
        .unwrap_or_else(|| "default".to_string());
    let running: Vec<crate::core::RunningProfile> = core.running_profiles();
    let profiles: Vec<String> = running.iter().map(|p| p.name.clone()).collect();
    let api = |cmd: &str| crate::api::execute(core, cmd).body;
    let exists = |id: &str, d: &str| snap.directory.user(d, id).is_some();
    let registered = |id: &str, d: &str| {
        running.iter().any(|p| {
            core.registrations(&p.name)
                .iter()
                .any(|r| r.sip_user == id && r.sip_host == d)
        })
    };
    route(
        &snap.dialplan,
        &Call {
            destination: dest,
            caller: user,
            context: &context,
            channel,
            globals: &snap.vars,
            gateways: &snap.gateways,
            profiles: &profiles,
            user_exists: &exists,
            registered: &registered,
            api: &api,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Layout, copy_dir, find_stock_tree};
    use std::path::PathBuf;

    const INTERNATIONAL: &str = "011442071234567";

    fn stock() -> PathBuf {
        find_stock_tree(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("the stock tree")
    }

    /// What the `dialplan` production step leaves: the sip_uri and example.com extensions
    /// inside comments (as src/harden/dialplan.rs writes them), `international` gone from the
    /// stock users' toll_allow.
    fn apply_step(conf: &Path) {
        let comment_out = |rel: &str, names: &[&str]| {
            let path = conf.join(rel);
            let mut text = std::fs::read_to_string(&path).unwrap();
            for name in names {
                let open = format!("<extension name=\"{name}\">");
                let start = text.find(&open).unwrap();
                let end = start + text[start..].find("</extension>").unwrap() + 12;
                let body = text[start..end].to_string();
                text.replace_range(
                    start..end,
                    &format!(
                        "<!-- fsfleet harden dialplan: stock extension disabled (toll fraud): FS-DP-0x\n    {body} -->"
                    ),
                );
            }
            std::fs::write(path, text).unwrap();
        };
        comment_out("dialplan/default.xml", &["sip_uri"]);
        comment_out(
            "dialplan/default/01_example.com.xml",
            &[
                "local.example.com",
                "domestic.example.com",
                "international.example.com",
            ],
        );
        for id in 1000..=1019 {
            let p = conf.join(format!("directory/default/{id}.xml"));
            let t = std::fs::read_to_string(&p).unwrap();
            std::fs::write(
                &p,
                t.replace("domestic,international,local", "domestic,local"),
            )
            .unwrap();
        }
    }

    struct Switch {
        snap: config::Snapshot,
        modules: Vec<String>,
        registered: Vec<String>,
    }

    fn switch(conf: &Path) -> Switch {
        let layout = Layout {
            conf_dir: conf.to_path_buf(),
            log_dir: "/var/log/freeswitch".into(),
        };
        let mut base = Vars::new();
        base.insert("local_ip_v4".into(), "10.9.8.7".into());
        Switch {
            snap: config::load(&layout, &base).unwrap(),
            modules: config::startup_modules(&layout, &base).unwrap(),
            registered: Vec::new(),
        }
    }

    fn call(sw: &Switch, user: &str, dest: &str) -> Routed {
        let domain = "10.9.8.7";
        let u = sw.snap.directory.user(domain, user).unwrap();
        let mut channel: HashMap<String, String> = u.variables.iter().cloned().collect();
        channel.insert("domain_name".into(), domain.into());
        let context = channel
            .get("user_context")
            .cloned()
            .unwrap_or_else(|| "public".into());
        let profiles = vec!["internal".to_string()];
        let api = |cmd: &str| match cmd.split_once(' ') {
            Some(("module_exists", m)) => sw.modules.iter().any(|x| x == m).to_string(),
            _ => format!("-ERR {cmd} Command not found!\n"),
        };
        let exists = |id: &str, d: &str| sw.snap.directory.user(d, id).is_some();
        let registered = |id: &str, _: &str| sw.registered.iter().any(|r| r == id);
        route(
            &sw.snap.dialplan,
            &Call {
                destination: dest,
                caller: user,
                context: &context,
                channel,
                globals: &sw.snap.vars,
                gateways: &sw.snap.gateways,
                profiles: &profiles,
                user_exists: &exists,
                registered: &registered,
                api: &api,
            },
        )
    }

    fn hung_up(cause: Cause, ext: &str) -> Routed {
        Routed::HungUp {
            cause,
            extension: Some(ext.to_string()),
        }
    }

    /// A caller's number full of `${` (the enum extension expands it) neither overflows the
    /// stack nor hangs: nesting is bounded.
    #[test]
    fn a_deeply_nested_destination_is_routed_not_a_crash() {
        let sw = switch(&stock());
        let deep = format!("{}x{}", "${".repeat(5000), "}".repeat(5000));
        let _ = call(&sw, "1000", &deep);
    }

    #[test]
    fn the_stock_tree_bridges_an_international_call_to_the_missing_example_gateway() {
        let sw = switch(&stock());
        // international.example.com ends the hunt (after `global`, continue="true", added its
        // log lines and sleep): its bridge names gateway example.com, which no profile
        // configures.
        assert_eq!(
            call(&sw, "1000", INTERNATIONAL),
            hung_up(Cause::INVALID_GATEWAY, "international.example.com")
        );
        assert_eq!(Cause::INVALID_GATEWAY.sip(), (484, "Address Incomplete"));
        assert_eq!(
            Cause::INVALID_GATEWAY.reason(),
            "SIP;cause=608;text=\"INVALID_GATEWAY\""
        );
        // 9196 is the echo extension: answered.
        assert!(matches!(call(&sw, "1000", "9196"), Routed::Answered { .. }));
        // Seven digits: local.example.com, the same missing gateway.
        assert_eq!(
            call(&sw, "1000", "5551234"),
            hung_up(Cause::INVALID_GATEWAY, "local.example.com")
        );
        // An unknown number: the enum extension transfers it to mod_enum's dialplan, which finds
        // no record: an extension named by the number, without applications, NORMAL_CLEARING.
        assert_eq!(
            call(&sw, "1000", "777"),
            hung_up(Cause::NORMAL_CLEARING, "777")
        );
        assert_eq!(
            Cause::NORMAL_CLEARING.sip(),
            (480, "Temporarily Unavailable")
        );
        assert_eq!(
            Cause::NORMAL_CLEARING.reason(),
            "Q.850;cause=16;text=\"NORMAL_CLEARING\""
        );
    }

    #[test]
    fn after_the_dialplan_step_the_international_call_no_longer_reaches_a_gateway() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&stock(), dir.path());
        apply_step(dir.path());
        let sw = switch(dir.path());
        assert_eq!(
            call(&sw, "1000", INTERNATIONAL),
            hung_up(Cause::NORMAL_CLEARING, INTERNATIONAL)
        );
        assert_eq!(
            call(&sw, "1000", "9196"),
            Routed::Answered {
                extension: "echo".into()
            }
        );
        // sip_uri is gone: a dialled sip: URI is no longer bridged out.
        let uri = "sip:someone@example.net";
        assert_eq!(call(&sw, "1000", uri), hung_up(Cause::NORMAL_CLEARING, uri));
        // Only the toll_allow change (extensions left): the condition on ${toll_allow} fails.
        let dir2 = tempfile::tempdir().unwrap();
        copy_dir(&stock(), dir2.path());
        let p = dir2.path().join("directory/default/1000.xml");
        let t = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, t.replace("domestic,international,local", "local")).unwrap();
        let sw = switch(dir2.path());
        assert_eq!(
            call(&sw, "1000", INTERNATIONAL),
            hung_up(Cause::NORMAL_CLEARING, INTERNATIONAL)
        );
        assert_eq!(
            call(&sw, "1001", INTERNATIONAL),
            hung_up(Cause::INVALID_GATEWAY, "international.example.com")
        );
    }

    #[test]
    fn without_mod_enum_or_a_dialplan_the_causes_follow_freeswitch() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&stock(), dir.path());
        apply_step(dir.path());
        let mut sw = switch(dir.path());
        sw.modules.retain(|m| m != "mod_enum");
        // The catch-all acknowledge_call extension: 180, then hold music as early media.
        assert!(matches!(
            call(&sw, "1000", INTERNATIONAL),
            Routed::NotModelled { ref app, .. } if app.name == "playback"
        ));
        // A user of the stock dialplan, not registered: continue_on_fail=true, then answer
        // (voicemail); registered: a real call, not modelled.
        assert!(matches!(call(&sw, "1000", "1001"), Routed::Answered { .. }));
        sw.registered.push("1001".into());
        assert!(matches!(
            call(&sw, "1000", "1001"),
            Routed::NotModelled { ref app, .. } if app.name == "bridge"
        ));
        // No dialplan files: no route, 404.
        sw.snap.dialplan = Dialplan::default();
        assert_eq!(
            call(&sw, "1000", "9196"),
            Routed::HungUp {
                cause: Cause::NO_ROUTE_DESTINATION,
                extension: None
            }
        );
        assert_eq!(Cause::NO_ROUTE_DESTINATION.sip(), (404, "Not Found"));
    }

    fn dp(xml_text: &str) -> Dialplan {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dialplan")).unwrap();
        std::fs::write(dir.path().join("dialplan/t.xml"), xml_text).unwrap();
        Dialplan::load(dir.path(), &mut Vars::new()).unwrap()
    }

    fn route_simple(d: &Dialplan, dest: &str, vars: &[(&str, &str)]) -> Routed {
        let globals = Vars::new();
        let api = |_: &str| String::new();
        let no = |_: &str, _: &str| false;
        route(
            d,
            &Call {
                destination: dest,
                caller: "1000",
                context: "default",
                channel: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                globals: &globals,
                gateways: &["up".to_string()],
                profiles: &[],
                user_exists: &no,
                registered: &no,
                api: &api,
            },
        )
    }

    #[test]
    fn conditions_break_continue_comments_and_captures() {
        let d = dp(r#"<include><context name="default">
            <!-- <extension name="gone"><condition field="destination_number" expression="^1$"><action application="answer"/></condition></extension> -->
            <extension name="pre" continue="true">
              <condition field="${flag}" expression="^on$" break="never"><action application="set" data="gw=nope"/></condition>
              <condition><action application="set" data="seen=yes"/></condition>
            </extension>
            <extension name="two">
              <condition field="${tier}" expression="gold"/>
              <condition field="destination_number" expression="^9(\d+)$">
                <action application="bridge" data="sofia/gateway/${gw}/$1"/>
              </condition>
            </extension>
            <extension name="anti">
              <condition field="destination_number" expression="^8$">
                <action application="answer"/>
                <anti-action application="hangup" data="CALL_REJECTED"/>
              </condition>
            </extension>
          </context></include>"#);
        // No `flag`: the first condition fails but break="never" goes on to the absolute one
        // (`set seen`), and continue="true" on to `two`, whose bridge gets `$1`.
        assert_eq!(
            route_simple(&d, "95", &[("tier", "gold"), ("gw", "up")]),
            Routed::NotModelled {
                extension: "two".into(),
                app: App {
                    name: "bridge".into(),
                    data: "sofia/gateway/${gw}/5".into()
                }
            }
        );
        // flag on: gw becomes `nope`, not configured.
        assert_eq!(
            route_simple(&d, "95", &[("tier", "gold"), ("flag", "on"), ("gw", "up")]),
            hung_up(Cause::INVALID_GATEWAY, "two")
        );
        // The first condition of `two` fails (on-false): `anti`'s anti-action hangs up.
        assert_eq!(
            route_simple(&d, "95", &[]),
            hung_up(Cause(21, "CALL_REJECTED"), "anti")
        );
        assert_eq!(Cause(21, "CALL_REJECTED").sip().0, 603);
        // The commented extension does not exist.
        assert_eq!(
            route_simple(&d, "1", &[]),
            hung_up(Cause(21, "CALL_REJECTED"), "anti")
        );
    }

    #[test]
    fn unset_clears_and_export_nolocal_leaves_this_leg_alone() {
        let d = dp(r#"<include><context name="default">
            <extension name="x"><condition field="destination_number" expression="^5$">
              <action application="unset" data="gw"/>
              <action application="export" data="nolocal:gw=up"/>
              <action application="bridge" data="sofia/gateway/${gw}/5"/>
            </condition></extension>
          </context></include>"#);
        assert_eq!(
            route_simple(&d, "5", &[("gw", "up")]),
            hung_up(Cause::INVALID_GATEWAY, "x")
        );
    }

    #[test]
    fn no_action_anywhere_is_no_route_and_lookahead_works() {
        let d = dp(r#"<include><context name="default">
            <extension name="a"><condition field="destination_number" expression="^((?!6000)60\d{2})$"><action application="answer"/></condition></extension>
          </context></include>"#);
        assert!(matches!(
            route_simple(&d, "6001", &[]),
            Routed::Answered { .. }
        ));
        assert_eq!(
            route_simple(&d, "6000", &[]),
            Routed::HungUp {
                cause: Cause::NO_ROUTE_DESTINATION,
                extension: None
            }
        );
    }

    #[test]
    fn dates_and_numbers_compare_like_switch_number_cmp() {
        assert!(number_cmp("2-6", 4, true));
        assert!(!number_cmp("2-6", 7, true));
        assert!(number_cmp("6-2", 1, false));
        assert!(number_cmp("mon-fri", 2, true));
        assert!(number_cmp("1,5,9", 5, false));
        assert!(time_of_day("08:00-17:30", 17 * 3600 + 1800));
        assert!(!time_of_day("08:00-17:30", 17 * 3600 + 1801));
        // 2026-11-30 is a Monday (wday 2), in the 5th week of November (Nov 1 is a Sunday).
        let t = chrono::NaiveDate::from_ymd_opt(2026, 11, 30)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap();
        let a = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(time_match(&a("wday", "2"), &t), Some(true));
        assert_eq!(time_match(&a("mweek", "5"), &t), Some(true));
        assert_eq!(time_match(&a("hour", "9-18"), &t), Some(true));
        assert_eq!(time_match(&a("mon", "12"), &t), Some(false));
        assert_eq!(time_match(&[], &t), None);
    }
}
