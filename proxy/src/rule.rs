//! TEMPORARY placeholder until the rule engine branch lands: supports only `PathPrefix` and `Host`.
use std::net::IpAddr;

pub struct RouteInput<'a> {
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
    pub client_ip: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Rule(Vec<(bool, String)>);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} at column {column} of rule `{rule}`")]
pub struct RuleError {
    pub message: String,
    pub column: usize,
    pub rule: String,
}

impl Rule {
    pub fn parse(src: &str) -> Result<Rule, RuleError> {
        let mut v = Vec::new();
        for part in src.split("&&") {
            let part = part.trim();
            let arg = part.split('`').nth(1).unwrap_or("").to_owned();
            if part.starts_with("Host(") {
                v.push((true, arg.to_ascii_lowercase()));
            } else if part.starts_with("PathPrefix(") {
                v.push((false, arg));
            } else {
                return Err(RuleError {
                    message: format!("unknown matcher in `{part}`"),
                    column: 1,
                    rule: src.into(),
                });
            }
        }
        Ok(Rule(v))
    }
    pub fn matches(&self, req: &RouteInput<'_>) -> bool {
        self.0.iter().all(|(host, a)| {
            if *host {
                req.host.eq_ignore_ascii_case(a)
            } else {
                req.path.starts_with(a.as_str())
            }
        })
    }
    pub fn default_priority(src: &str) -> i64 {
        src.len() as i64
    }
    pub fn required_hosts(&self) -> Option<Vec<String>> {
        self.0
            .iter()
            .find(|(h, _)| *h)
            .map(|(_, a)| vec![a.clone()])
    }
}
