//! The WAF of CONTRACT §14: libmodsecurity 3 running the OWASP Core Rule
//! Set on the canonical request.
//!
//! The `modsecurity` crate needs libmodsecurity 3.0.13 or later, and
//! Debian bookworm ships 3.0.9, so the few C functions used here are
//! declared directly. A rule set is compiled once per configuration
//! snapshot (one per distinct exclusion list, since `SecRuleRemoveById`
//! must follow the rules it removes) and shared by every worker; a request
//! only creates a transaction on it.
//!
//! The decision is the CRS's own: its blocking evaluation (rule 949110,
//! `deny` once the inbound anomaly score reaches the threshold) raises an
//! intervention. The matched rule ids and the score are read from the
//! engine's log lines, of which nothing else is kept: they carry the
//! matched data.

use std::ffi::{c_char, c_int, c_uchar, c_void, CStr, CString};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use sha2::{Digest, Sha256};

use crate::config::WafConfig;

#[repr(C)]
struct Intervention {
    status: c_int,
    pause: c_int,
    url: *mut c_char,
    log: *mut c_char,
    disruptive: c_int,
}

#[repr(C)]
struct MscEngine {
    _private: [u8; 0],
}
#[repr(C)]
struct MscRules {
    _private: [u8; 0],
}
#[repr(C)]
struct MscTransaction {
    _private: [u8; 0],
}

type LogCb = extern "C" fn(*mut c_void, *const c_void);

#[link(name = "modsecurity")]
extern "C" {
    fn msc_init() -> *mut MscEngine;
    fn msc_set_connector_info(msc: *mut MscEngine, connector: *const c_char);
    fn msc_set_log_cb(msc: *mut MscEngine, cb: LogCb);
    fn msc_create_rules_set() -> *mut MscRules;
    fn msc_rules_add_file(
        rules: *mut MscRules,
        file: *const c_char,
        error: *mut *const c_char,
    ) -> c_int;
    fn msc_rules_add(
        rules: *mut MscRules,
        plain: *const c_char,
        error: *mut *const c_char,
    ) -> c_int;
    fn msc_rules_cleanup(rules: *mut MscRules) -> c_int;
    fn msc_new_transaction(
        msc: *mut MscEngine,
        rules: *mut MscRules,
        log_data: *mut c_void,
    ) -> *mut MscTransaction;
    fn msc_process_connection(
        t: *mut MscTransaction,
        client: *const c_char,
        client_port: c_int,
        server: *const c_char,
        server_port: c_int,
    ) -> c_int;
    /// `protocol` is the request method (the C API's name for it).
    fn msc_process_uri(
        t: *mut MscTransaction,
        uri: *const c_char,
        protocol: *const c_char,
        http_version: *const c_char,
    ) -> c_int;
    fn msc_add_n_request_header(
        t: *mut MscTransaction,
        key: *const c_uchar,
        key_len: usize,
        value: *const c_uchar,
        value_len: usize,
    ) -> c_int;
    fn msc_process_request_headers(t: *mut MscTransaction) -> c_int;
    fn msc_append_request_body(t: *mut MscTransaction, body: *const c_uchar, size: usize) -> c_int;
    fn msc_process_request_body(t: *mut MscTransaction) -> c_int;
    fn msc_intervention(t: *mut MscTransaction, it: *mut Intervention) -> c_int;
    fn msc_transaction_cleanup(t: *mut MscTransaction);
}

/// The process's one libmodsecurity instance: it only holds the log
/// callback and the connector name, and lives as long as the process.
struct Engine(*mut MscEngine);

// SAFETY: after setup the instance is only read; libmodsecurity creates
// transactions on it from any thread (its own connectors do).
unsafe impl Send for Engine {}
unsafe impl Sync for Engine {}

fn engine() -> *mut MscEngine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            // SAFETY: plain constructor and setters on the new instance.
            unsafe {
                let msc = msc_init();
                msc_set_connector_info(msc, c"portcullis".as_ptr());
                msc_set_log_cb(msc, on_log);
                Engine(msc)
            }
        })
        .0
}

/// The engine's log line of one matched rule (text form, the default):
/// only the rule id and, from the blocking evaluation, the total score are
/// taken; the line itself, which quotes the matched data, is dropped.
extern "C" fn on_log(data: *mut c_void, line: *const c_void) {
    if data.is_null() || line.is_null() {
        return;
    }
    // SAFETY: `data` is the `Matches` the transaction was created with,
    // alive and only used by this thread for the transaction's length;
    // `line` is a NUL-terminated string for the call's duration.
    let (matches, line) = unsafe { (&mut *data.cast::<Matches>(), CStr::from_ptr(line.cast())) };
    matches.record(&line.to_string_lossy());
}

/// What one transaction matched.
#[derive(Debug, Default)]
struct Matches {
    rules: Vec<u32>,
    score: Option<u32>,
}

/// The CRS's blocking evaluation; its message carries the total score.
const BLOCKING_EVALUATION: u32 = 949110;
const MAX_RULES_KEPT: usize = 64;

impl Matches {
    fn record(&mut self, line: &str) {
        let Some(id) = tag(line, "id").and_then(|v| v.parse::<u32>().ok()) else {
            return;
        };
        if id == BLOCKING_EVALUATION {
            self.score = tag(line, "msg")
                .and_then(|m| m.split("Total Score: ").nth(1))
                .and_then(|rest| rest.split(')').next())
                .and_then(|n| n.trim().parse().ok());
        } else if self.rules.len() < MAX_RULES_KEPT && !self.rules.contains(&id) {
            self.rules.push(id);
        }
    }
}

/// The value of `[name "value"]` in an engine log line.
fn tag<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("[{name} \"");
    let start = line.find(&open)? + open.len();
    let rest = line.get(start..)?;
    rest.find('"').and_then(|end| rest.get(..end))
}

/// A compiled rule set.
struct Rules(*mut MscRules);

// SAFETY: a compiled rule set is read-only while transactions run on it;
// it is freed only when the last snapshot holding it goes.
unsafe impl Send for Rules {}
unsafe impl Sync for Rules {}

impl Drop for Rules {
    fn drop(&mut self) {
        // SAFETY: created by msc_create_rules_set, freed once.
        unsafe {
            msc_rules_cleanup(self.0);
        }
    }
}

/// A rule file or directive that did not compile.
#[derive(Debug, thiserror::Error)]
pub enum WafError {
    #[error("{0}")]
    Rules(String),
    #[error("`{0}` matches no rule file")]
    NoMatch(String),
    #[error("cannot read `{0}`: {1}")]
    Read(String, std::io::Error),
}

/// `[waf]` compiled: the rule set a route without exclusions uses, and
/// what builds the others.
pub struct Waf {
    pub config: WafConfig,
    files: Vec<PathBuf>,
    /// The expanded rule files' names and contents, so a reload after an
    /// edited rule file recompiles even when `[waf]` reads the same.
    fingerprint: [u8; 32],
    base: Arc<RuleSet>,
    /// Transactions take about a millisecond of CPU with the CRS, too
    /// long for a worker's event loop: they run on the blocking pool, at
    /// most this many at once, so a flood of large bodies cannot take
    /// every thread.
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// The rules of one route's exclusion list.
pub struct RuleSet {
    rules: Rules,
    excluded: Vec<u32>,
}

impl Waf {
    /// Expands the rule globs and compiles the rules without exclusions.
    pub fn compile(config: WafConfig) -> Result<Waf, WafError> {
        let mut files = Vec::new();
        for pattern in &config.rules {
            files.extend(expand(&pattern.value)?);
        }
        let fingerprint = fingerprint(&files)?;
        let base = Arc::new(RuleSet::compile(&config, &files, &[])?);
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Waf {
            config,
            files,
            fingerprint,
            base,
            slots: Arc::new(tokio::sync::Semaphore::new(cpus * 2)),
        })
    }

    /// Whether `config` would compile to these rules: the same `[waf]`
    /// and rule files whose names and contents have not changed.
    pub fn is_current(&self, config: &WafConfig) -> bool {
        if self.config != *config {
            return false;
        }
        let mut files = Vec::new();
        for pattern in &config.rules {
            match expand(&pattern.value) {
                Ok(found) => files.extend(found),
                Err(_) => return false,
            }
        }
        fingerprint(&files).is_ok_and(|f| f == self.fingerprint)
    }

    /// The rule set of a route that switches off `excluded`.
    pub fn rule_set(&self, excluded: &[u32]) -> Result<Arc<RuleSet>, WafError> {
        if excluded.is_empty() {
            return Ok(self.base.clone());
        }
        RuleSet::compile(&self.config, &self.files, excluded).map(Arc::new)
    }
}

fn fingerprint(files: &[PathBuf]) -> Result<[u8; 32], WafError> {
    let mut hash = Sha256::new();
    for file in files {
        let name = file.as_os_str().as_encoded_bytes();
        let text =
            std::fs::read(file).map_err(|e| WafError::Read(file.display().to_string(), e))?;
        for part in [name, &text] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
    }
    Ok(hash.finalize().into())
}

/// `dir/*.conf` style patterns: a `*` only in the file name, matches in
/// name order (the CRS's files are numbered to be loaded that way).
fn expand(pattern: &str) -> Result<Vec<PathBuf>, WafError> {
    let path = Path::new(pattern);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !name.contains('*') {
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let entries = std::fs::read_dir(dir).map_err(|e| WafError::Read(pattern.into(), e))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| glob_match(name, n))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(WafError::NoMatch(pattern.into()));
    }
    Ok(out)
}

fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Ids this module's own directives use (the local range of ModSecurity).
const JSON_BODY_RULE: u32 = 99_001;
const XML_BODY_RULE: u32 = 99_002;
const SETTINGS_RULE: u32 = 99_003;

/// Rules of our own, loaded before the CRS's blocking evaluation and
/// scored like its critical rules:
/// - Log4Shell lookups (`${jndi:…}` and nested `${…${`), which the CRS of
///   Debian bookworm (3.3.4) predates;
/// - a JSON or XML body the engine could not parse (and that was not cut
///   at `inspect_body_bytes`): its values were never inspected, and a
///   lenient backend may still read them;
/// - XML entity declarations, the carrier of external-entity (XXE) and
///   entity-expansion attacks, which an API body has no use for.
const OWN_RULES: &str = concat!(
    "SecRule REQUEST_LINE|ARGS_GET|ARGS_GET_NAMES|REQUEST_COOKIES|REQUEST_COOKIES_NAMES|REQUEST_HEADERS ",
    "\"@rx (?i)(?:[$]|&dollar;?)(?:[{]|&l(?:brace|cub);?)(?:[^}]{0,15}(?:[$]|&dollar;?)(?:[{]|&l(?:brace|cub);?)|jndi|ctx)\" ",
    "\"id:99010,phase:1,block,t:none,t:urlDecodeUni,t:jsDecode,t:htmlEntityDecode,log,",
    "msg:'Potential Remote Command Execution: Log4j / Log4shell',severity:'CRITICAL',",
    "setvar:'tx.rce_score=+%{tx.critical_anomaly_score}',",
    "setvar:'tx.anomaly_score_pl1=+%{tx.critical_anomaly_score}'\"\n",
    "SecRule ARGS_POST|ARGS_POST_NAMES|XML:/*|XML://@* ",
    "\"@rx (?i)(?:[$]|&dollar;?)(?:[{]|&l(?:brace|cub);?)(?:[^}]{0,15}(?:[$]|&dollar;?)(?:[{]|&l(?:brace|cub);?)|jndi|ctx)\" ",
    "\"id:99011,phase:2,block,t:none,t:urlDecodeUni,t:jsDecode,t:htmlEntityDecode,log,",
    "msg:'Potential Remote Command Execution: Log4j / Log4shell',severity:'CRITICAL',",
    "setvar:'tx.rce_score=+%{tx.critical_anomaly_score}',",
    "setvar:'tx.anomaly_score_pl1=+%{tx.critical_anomaly_score}'\"\n",
    "SecRule REQBODY_ERROR \"!@eq 0\" ",
    "\"id:99012,phase:2,block,t:none,log,msg:'Request body could not be parsed',severity:'CRITICAL',chain\"\n",
    "SecRule INBOUND_DATA_ERROR \"@eq 0\" ",
    "\"t:none,setvar:'tx.anomaly_score_pl1=+%{tx.critical_anomaly_score}'\"\n",
    "SecRule REQUEST_HEADERS:Content-Type \"@rx (?i)xml\" ",
    "\"id:99013,phase:2,block,t:none,log,msg:'XML entity declaration',severity:'CRITICAL',chain\"\n",
    "SecRule REQUEST_BODY \"@rx (?i)<!ENTITY\" ",
    "\"t:none,setvar:'tx.anomaly_score_pl1=+%{tx.critical_anomaly_score}'\"\n",
);

impl RuleSet {
    fn compile(config: &WafConfig, files: &[PathBuf], excluded: &[u32]) -> Result<Self, WafError> {
        // libmodsecurity's rule parser keeps global state: two rule sets
        // compiled at once corrupt each other. Compiling is off the
        // request path, so one at a time costs nothing that matters.
        static PARSER: Mutex<()> = Mutex::new(());
        let _parsing = PARSER.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: a new, owned rule set, freed by `Rules`'s drop.
        let rules = Rules(unsafe { msc_create_rules_set() });
        let limit = config.inspect_body_bytes;
        // The route table already decides which methods a route takes;
        // the CRS's default list (no PUT, PATCH or DELETE) would refuse
        // ordinary APIs.
        let prelude = format!(
            "SecRuleEngine On\n\
             SecRequestBodyAccess On\n\
             SecResponseBodyAccess Off\n\
             SecAuditEngine Off\n\
             SecRequestBodyLimit {limit}\n\
             SecRequestBodyNoFilesLimit {limit}\n\
             SecRequestBodyLimitAction ProcessPartial\n\
             SecRule REQUEST_HEADERS:Content-Type \"@rx (?i)^application/(?:[a-z0-9.+-]*\\+)?json\" \
             \"id:{JSON_BODY_RULE},phase:1,t:none,pass,nolog,ctl:requestBodyProcessor=JSON\"\n\
             SecRule REQUEST_HEADERS:Content-Type \"@rx (?i)^(?:application|text)/(?:[a-z0-9.+-]*\\+)?xml\" \
             \"id:{XML_BODY_RULE},phase:1,t:none,pass,nolog,ctl:requestBodyProcessor=XML\"\n\
             SecAction \"id:{SETTINGS_RULE},phase:1,pass,nolog,t:none,\
             setvar:tx.paranoia_level={pl},setvar:tx.executing_paranoia_level={pl},\
             setvar:tx.inbound_anomaly_score_threshold={threshold},\
             setvar:'tx.allowed_methods=GET HEAD POST PUT PATCH DELETE OPTIONS'\"\n",
            pl = config.paranoia_level,
            threshold = config.anomaly_threshold,
        );
        add(&rules, &prelude)?;
        let evaluation = files.iter().position(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("REQUEST-949-"))
        });
        for (i, file) in files.iter().enumerate() {
            if Some(i) == evaluation {
                add(&rules, OWN_RULES)?;
            }
            let c = CString::new(file.as_os_str().as_encoded_bytes())
                .map_err(|_| WafError::Rules(format!("`{}`: NUL in path", file.display())))?;
            let mut error: *const c_char = std::ptr::null();
            // SAFETY: valid strings; `error` is set to a malloc'ed message
            // on failure, taken and freed by `failure`.
            let n = unsafe { msc_rules_add_file(rules.0, c.as_ptr(), &mut error) };
            if n < 0 {
                return Err(failure(error));
            }
        }
        if evaluation.is_none() {
            add(&rules, OWN_RULES)?;
        }
        if !excluded.is_empty() {
            let ids: Vec<String> = excluded.iter().map(u32::to_string).collect();
            add(&rules, &format!("SecRuleRemoveById {}\n", ids.join(" ")))?;
        }
        Ok(RuleSet {
            rules,
            excluded: excluded.to_vec(),
        })
    }

    pub fn excluded(&self) -> &[u32] {
        &self.excluded
    }
}

fn add(rules: &Rules, text: &str) -> Result<(), WafError> {
    let c = CString::new(text).map_err(|_| WafError::Rules("NUL in directive".into()))?;
    let mut error: *const c_char = std::ptr::null();
    // SAFETY: as in `RuleSet::compile`.
    let n = unsafe { msc_rules_add(rules.0, c.as_ptr(), &mut error) };
    if n < 0 {
        return Err(failure(error));
    }
    Ok(())
}

fn failure(error: *const c_char) -> WafError {
    if error.is_null() {
        return WafError::Rules("the rule set does not compile".into());
    }
    // SAFETY: a NUL-terminated string libmodsecurity allocated with
    // strdup, owned by the caller.
    let message = unsafe {
        let m = CStr::from_ptr(error).to_string_lossy().trim().to_string();
        libc::free(error as *mut c_void);
        m
    };
    WafError::Rules(placed(&message).unwrap_or(message))
}

/// `Rules error. File: F. Line: L. Column: C. Reason` as `F:L:C: Reason`.
fn placed(message: &str) -> Option<String> {
    let rest = message.split("File: ").nth(1)?;
    let (file, rest) = rest.split_once(". Line: ")?;
    let (line, rest) = rest.split_once(". Column: ")?;
    let (col, reason) = rest.split_once(". ").unwrap_or((rest, ""));
    Some(format!("{file}:{line}:{col}: {}", reason.trim()))
}

/// What a request is to the WAF.
pub struct Inspected<'a> {
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    /// The canonical target: normalized path and query.
    pub target: &'a str,
    pub http_version: &'static str,
    pub headers: &'a http::HeaderMap,
    pub body: Option<&'a [u8]>,
}

/// Whether a body of this type is inspected: JSON, form or XML.
pub fn inspects_body(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let (kind, subtype) = (kind.to_ascii_lowercase(), subtype.to_ascii_lowercase());
    match kind.as_str() {
        "application" => {
            matches!(subtype.as_str(), "json" | "xml" | "x-www-form-urlencoded")
                || subtype.ends_with("+json")
                || subtype.ends_with("+xml")
        }
        "text" => subtype == "xml",
        _ => false,
    }
}

/// The outcome of one transaction.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The anomaly score reached the threshold.
    pub matched: bool,
    pub rules: Vec<u32>,
    pub score: Option<u32>,
}

impl RuleSet {
    /// Runs the request phases (headers, then body) on `req`.
    pub fn inspect(&self, req: &Inspected<'_>) -> Verdict {
        let mut matches = Matches::default();
        let msc = engine();
        let client = CString::new(req.client_ip.map(|ip| ip.to_string()).unwrap_or_default())
            .unwrap_or_default();
        let method = CString::new(req.method).unwrap_or_default();
        // The canonical target is percent-encoded ASCII; a NUL cannot be
        // in it, but should one be, the engine sees an empty target and
        // the request is refused as unparsable elsewhere.
        let uri = CString::new(req.target).unwrap_or_default();
        let version = CString::new(req.http_version).unwrap_or_default();
        let matched;
        // SAFETY: the transaction is created, used and freed here, on one
        // thread; every pointer passed lives across the calls; `matches`
        // outlives the transaction (the log callback writes to it).
        unsafe {
            let t = msc_new_transaction(
                msc,
                self.rules.0,
                (&mut matches as *mut Matches).cast::<c_void>(),
            );
            if t.is_null() {
                return Verdict {
                    matched: true,
                    rules: Vec::new(),
                    score: None,
                };
            }
            msc_process_connection(t, client.as_ptr(), 0, c"127.0.0.1".as_ptr(), 0);
            msc_process_uri(t, uri.as_ptr(), method.as_ptr(), version.as_ptr());
            for (name, value) in req.headers {
                let (k, v) = (name.as_str().as_bytes(), value.as_bytes());
                msc_add_n_request_header(t, k.as_ptr(), k.len(), v.as_ptr(), v.len());
            }
            msc_process_request_headers(t);
            matched = intervened(t, &mut matches) || {
                if let Some(body) = req.body {
                    msc_append_request_body(t, body.as_ptr(), body.len());
                }
                msc_process_request_body(t);
                intervened(t, &mut matches)
            };
            msc_transaction_cleanup(t);
        }
        Verdict {
            matched,
            rules: matches.rules,
            score: matches.score,
        }
    }
}

/// Whether the engine asks for a disruptive action now. Its log line
/// (the blocking evaluation's, with the score) is read like the others.
unsafe fn intervened(t: *mut MscTransaction, matches: &mut Matches) -> bool {
    let mut it = Intervention {
        status: 200,
        pause: 0,
        url: std::ptr::null_mut(),
        log: std::ptr::null_mut(),
        disruptive: 0,
    };
    let asked = msc_intervention(t, &mut it) != 0;
    if !it.url.is_null() {
        libc::free(it.url.cast());
    }
    if !it.log.is_null() {
        matches.record(&CStr::from_ptr(it.log).to_string_lossy());
        libc::free(it.log.cast());
    }
    asked && it.disruptive != 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::WafOversize;
    use crate::core::location::{Located, Location};

    fn crs(paranoia_level: u8) -> WafConfig {
        let at = Location {
            file: Path::new("t.toml").into(),
            line: 1,
            col: 1,
        };
        let rules = [
            "/etc/modsecurity/crs/crs-setup.conf",
            "/usr/share/modsecurity-crs/rules/*.conf",
        ];
        WafConfig {
            rules: rules
                .iter()
                .map(|r| Located {
                    value: r.to_string(),
                    at: at.clone(),
                })
                .collect(),
            paranoia_level,
            anomaly_threshold: 5,
            inspect_body_bytes: 65536,
            oversize: WafOversize::Reject,
            timeout: std::time::Duration::from_secs(1),
        }
    }

    fn run(set: &RuleSet, target: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Verdict {
        let mut map = http::HeaderMap::new();
        map.insert("host", http::HeaderValue::from_static("api.example.com"));
        map.insert("user-agent", http::HeaderValue::from_static("test/1.0"));
        map.insert("accept", http::HeaderValue::from_static("*/*"));
        for (k, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        let method = if body.is_some() { "POST" } else { "GET" };
        set.inspect(&Inspected {
            client_ip: Some("10.1.2.3".parse().unwrap()),
            method,
            target,
            http_version: "1.1",
            headers: &map,
            body,
        })
    }

    #[test]
    fn the_crs_blocks_attacks_and_passes_clean_requests() {
        let waf = Waf::compile(crs(1)).unwrap();
        let set = waf.rule_set(&[]).unwrap();
        let clean = run(&set, "/orders?id=42", &[], None);
        assert!(!clean.matched, "{clean:?}");
        let xss = run(
            &set,
            "/orders?q=%3Cscript%3Ealert(1)%3C/script%3E",
            &[],
            None,
        );
        assert!(xss.matched, "{xss:?}");
        assert!(xss.score.is_some_and(|s| s >= 5), "{xss:?}");
        assert!(
            xss.rules.iter().any(|id| (941000..942000).contains(id)),
            "{xss:?}"
        );
        let jndi = run(&set, "/", &[("x-api-version", "${jndi:ldap://x/a}")], None);
        assert!(jndi.matched, "{jndi:?}");
        let body = br#"{"name":"x' OR 1=1 --"}"#;
        let sqli = run(
            &set,
            "/orders",
            &[("content-type", "application/json")],
            Some(body),
        );
        assert!(sqli.matched, "{sqli:?}");
        let ok = br#"{"name":"Alice","when":"2026-12-02T13:00:00Z"}"#;
        let json = run(
            &set,
            "/orders",
            &[("content-type", "application/json")],
            Some(ok),
        );
        assert!(!json.matched, "{json:?}");
        let n = 200;
        let started = std::time::Instant::now();
        for _ in 0..n {
            run(&set, "/orders?id=42&page=2", &[], None);
        }
        eprintln!("clean GET: {:?} per transaction", started.elapsed() / n);
        let started = std::time::Instant::now();
        for _ in 0..n {
            run(
                &set,
                "/orders",
                &[("content-type", "application/json")],
                Some(ok),
            );
        }
        eprintln!(
            "clean JSON POST: {:?} per transaction",
            started.elapsed() / n
        );
    }

    #[test]
    fn unparsable_bodies_and_xml_entities_are_blocked_but_a_cut_body_is_not() {
        let waf = Waf::compile(crs(1)).unwrap();
        let set = waf.rule_set(&[]).unwrap();
        let json = [("content-type", "application/json")];
        let xml = [("content-type", "application/xml")];
        for bad in [&br#"{"a":1,,"b":"x"}"#[..], b"garbage{\"b\":1}", b"[1,2"] {
            let v = run(&set, "/orders", &json, Some(bad));
            assert!(v.matched && v.rules.contains(&99_012), "{v:?}");
        }
        let v = run(&set, "/orders", &xml, Some(b"<order><id>42"));
        assert!(v.matched && v.rules.contains(&99_012), "{v:?}");
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/hostname">]><a>&x;</a>"#;
        let v = run(&set, "/orders", &xml, Some(xxe));
        assert!(v.matched && v.rules.contains(&99_013), "{v:?}");
        for fine in [
            &br#"<?xml version="1.0"?><order><id>42</id><note>two apples</note></order>"#[..],
            b"<order id=\"42\"/>",
        ] {
            let v = run(&set, "/orders", &xml, Some(fine));
            assert!(!v.matched, "{v:?}");
        }
        assert!(!run(&set, "/orders", &json, Some(b"")).matched);
        // One byte past the limit: the engine cuts the body there, so the
        // JSON it parses ends early; that alone is no reason to block.
        let mut cut = br#"{"items":["#.to_vec();
        while cut.len() <= 65536 {
            cut.extend_from_slice(br#""abcdefgh","#);
        }
        cut.truncate(65537);
        let v = run(&set, "/orders", &json, Some(&cut));
        assert!(!v.matched, "{v:?}");
        let v = run(&set, "/orders", &json, Some(&cut[..65536]));
        assert!(v.matched && v.rules.contains(&99_012), "{v:?}");
    }

    #[test]
    fn an_exclusion_removes_the_rule() {
        let waf = Waf::compile(crs(1)).unwrap();
        let jndi = run(
            &waf.rule_set(&[]).unwrap(),
            "/",
            &[("x-a", "${jndi:ldap://x/a}")],
            None,
        );
        assert!(jndi.matched);
        let set = waf.rule_set(&jndi.rules).unwrap();
        assert!(!run(&set, "/", &[("x-a", "${jndi:ldap://x/a}")], None).matched);
    }

    #[test]
    fn a_broken_rule_file_is_reported_with_its_place() {
        let dir = std::env::temp_dir().join(format!("pc-waf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.conf");
        std::fs::write(
            &file,
            "# ok\nSecRule ARGS \"@rx a\" \"id:1,phase:2,nosuchaction\"\n",
        )
        .unwrap();
        let mut config = crs(1);
        config.rules.truncate(1);
        config.rules[0].value = file.display().to_string();
        let err = Waf::compile(config).err().unwrap().to_string();
        assert!(err.contains("bad.conf:2:"), "{err}");
    }

    #[test]
    fn globs_match_in_name_order() {
        assert!(glob_match("*.conf", "a.conf"));
        assert!(glob_match("REQUEST-*.conf", "REQUEST-901-X.conf"));
        assert!(!glob_match("*.conf", "a.conf.bak"));
        assert!(!glob_match("REQUEST-*.conf", "RESPONSE-950.conf"));
        assert!(glob_match("a*b*c", "aXbYc"));
    }
}
