//! Ports taken by NAT rules: a destination-NAT rule sends a port's traffic
//! elsewhere, so a listener on it binds without error and never sees a
//! connection. Parsed from nftables' own listing (`nft -a list ruleset`),
//! which is what Debian's iptables writes through its nftables backend.
//!
//! The text listing, not `nft -j`: the JSON form of a rule written by
//! iptables-nft shows its DNAT target as an opaque `xt` statement without
//! the destination, which the text form prints (`dnat to 172.17.0.2:80`).

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::event::Proto;

/// Most rules kept per namespace.
pub const RULES_CAPACITY: usize = 4096;

/// One destination-NAT rule that matches a destination port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRule {
    /// `ip`, `ip6`, `inet`.
    pub family: String,
    pub table: String,
    pub chain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    pub proto: Proto,
    /// The destination ports it matches (inclusive ranges).
    pub ports: Vec<(u16, u16)>,
    /// The destination address it matches, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daddr: Option<IpAddr>,
    /// Where it sends the traffic: `172.17.0.2:80`, or `:8080` for a
    /// redirect to a local port.
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_addr: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<u16>,
    /// `dnat` or `redirect`.
    pub action: String,
    /// The chain the rule jumps to, when the translation is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl NatRule {
    /// Whether this rule takes traffic for `proto` `port` sent to a
    /// listener on `addr` (a wildcard listener receives traffic for every
    /// address, so any rule on the port shadows part of it).
    pub fn covers(&self, proto: Proto, addr: IpAddr, port: u16) -> bool {
        let family_ok = match self.family.as_str() {
            "ip" => addr.is_ipv4() || addr.is_unspecified(),
            "ip6" => addr.is_ipv6(),
            _ => true,
        };
        family_ok
            && self.proto == proto
            && self.ports.iter().any(|&(lo, hi)| lo <= port && port <= hi)
            && match self.daddr {
                None => true,
                Some(d) => addr.is_unspecified() || d == addr,
            }
    }

    /// `table ip nat, chain DOCKER, handle 9`.
    pub fn location(&self) -> String {
        let handle = self
            .handle
            .map(|h| format!(", handle {h}"))
            .unwrap_or_default();
        let via = self
            .via
            .as_ref()
            .map(|c| format!(", through chain {c}"))
            .unwrap_or_default();
        format!(
            "table {} {}, chain {}{handle}{via}",
            self.family, self.table, self.chain
        )
    }
}

/// A listener whose traffic a NAT rule sends elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shadow {
    /// The listener's protocol and port the rule takes.
    pub proto: Proto,
    pub port: u16,
    pub rule: NatRule,
    /// The container the target address belongs to, when one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<super::Identity>,
}

impl Shadow {
    /// `tcp/80 is sent to 172.17.0.2:80 (container web) by a DNAT rule
    /// (table ip nat, chain DOCKER, handle 9)`.
    pub fn describe(&self) -> String {
        let (proto, port) = (self.proto, self.port);
        let owner = self
            .container
            .as_ref()
            .map(|c| format!(" ({})", c.label()))
            .unwrap_or_default();
        let what = if self.rule.action == "redirect" {
            "a redirect rule"
        } else {
            "a DNAT rule"
        };
        format!(
            "{proto}/{port} is sent to {}{owner} by {what} ({})",
            self.rule.to,
            self.rule.location()
        )
    }

    /// What to change.
    pub fn fix(&self) -> String {
        match &self.container {
            Some(c) => format!(
                "the port is taken by {}'s published port ({}), not by a socket: stop it ({}) \
                 or publish it elsewhere, or give this service another port",
                c.label_short(),
                self.rule.to,
                c.stop_command()
            ),
            None => format!(
                "remove or narrow the rule ({}: `nft delete rule {} {} {} handle {}`), or give \
                 this service another port",
                self.rule.location(),
                self.rule.family,
                self.rule.table,
                self.rule.chain,
                self.rule
                    .handle
                    .map_or_else(|| "N".to_owned(), |h| h.to_string())
            ),
        }
    }
}

/// The rule of `rules` that shadows a listener, with the container its
/// target belongs to.
pub fn shadow_of(
    rules: &[NatRule],
    dir: &super::Directory,
    proto: Proto,
    addr: IpAddr,
    port: u16,
) -> Option<Shadow> {
    let rule = rules.iter().find(|r| r.covers(proto, addr, port))?;
    let container = rule
        .to_addr
        .and_then(|a| dir.by_address(a))
        .map(|c| c.identity.clone());
    Some(Shadow {
        proto,
        port,
        rule: rule.clone(),
        container,
    })
}

/// The destination-NAT rules of `nft -a list ruleset`'s output that match
/// a TCP or UDP destination port: a rule that translates itself, or one
/// that jumps to a chain that does (kube-proxy's NodePort rules jump
/// through a service chain to an endpoint's `dnat`; the first target
/// found is named). Rules reached from no hook are kept too (where a
/// chain is jumped to from is not followed).
pub fn parse_ruleset(text: &str) -> Vec<NatRule> {
    let lines = rule_lines(text);
    // Each chain's own first translation, and the chains it jumps to.
    let mut target: HashMap<ChainKey, (String, String)> = HashMap::new();
    let mut jumps: HashMap<ChainKey, Vec<String>> = HashMap::new();
    for l in &lines {
        let key = (l.family.clone(), l.table.clone(), l.chain.clone());
        let w: Vec<&str> = l.words.iter().map(String::as_str).collect();
        if let Some(act) = w.iter().position(|x| *x == "dnat" || *x == "redirect") {
            target
                .entry(key)
                .or_insert_with(|| (w[act].to_owned(), destination(&w[act + 1..])));
        } else if let Some(c) = jump_target(&w) {
            jumps.entry(key).or_default().push(c.to_owned());
        }
    }
    let mut out = Vec::new();
    for l in &lines {
        if out.len() >= RULES_CAPACITY {
            break;
        }
        let w: Vec<&str> = l.words.iter().map(String::as_str).collect();
        let rule = if let Some(act) = w.iter().position(|x| *x == "dnat" || *x == "redirect") {
            port_match(&w[..act], l).map(|r| NatRule {
                action: w[act].to_owned(),
                ..with_target(r, destination(&w[act + 1..]))
            })
        } else if let Some(c) = jump_target(&w) {
            let found = reached(&l.family, &l.table, c, &target, &jumps, 0);
            port_match(&w, l).zip(found).map(|(r, (action, to))| {
                let mut r = with_target(r, to);
                r.action = action;
                r.via = Some(c.to_owned());
                r
            })
        } else {
            None
        };
        out.extend(rule);
    }
    out
}

/// (family, table, chain).
type ChainKey = (String, String, String);

/// Most jumps followed from a rule to the chain that translates.
const MAX_JUMPS: usize = 8;

struct RuleLine {
    family: String,
    table: String,
    chain: String,
    handle: Option<u64>,
    words: Vec<String>,
}

/// Every rule line of the listing, with its table, chain and handle.
fn rule_lines(text: &str) -> Vec<RuleLine> {
    let mut out = Vec::new();
    let (mut family, mut table, mut chain) = (String::new(), String::new(), String::new());
    for raw in text.lines() {
        let (line, handle) = match raw.rsplit_once("# handle ") {
            Some((l, h)) => (l.trim(), h.trim().parse::<u64>().ok()),
            None => (raw.trim(), None),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["table", f, t, "{", ..] => {
                family = (*f).to_owned();
                table = (*t).to_owned();
            }
            ["chain", c, "{", ..] => chain = (*c).to_owned(),
            [] | ["}"] | ["type", ..] => {}
            _ => out.push(RuleLine {
                family: family.clone(),
                table: table.clone(),
                chain: chain.clone(),
                handle,
                words: words.iter().map(|w| (*w).to_owned()).collect(),
            }),
        }
    }
    out
}

/// `jump CHAIN` or `goto CHAIN`.
fn jump_target<'a>(w: &[&'a str]) -> Option<&'a str> {
    let i = w.iter().position(|x| *x == "jump" || *x == "goto")?;
    w.get(i + 1).copied()
}

/// The translation `chain` (of the same table) reaches: its own, or one
/// of the chains it jumps to.
fn reached(
    family: &str,
    table: &str,
    chain: &str,
    target: &HashMap<ChainKey, (String, String)>,
    jumps: &HashMap<ChainKey, Vec<String>>,
    depth: usize,
) -> Option<(String, String)> {
    if depth >= MAX_JUMPS {
        return None;
    }
    let key = (family.to_owned(), table.to_owned(), chain.to_owned());
    if let Some(t) = target.get(&key) {
        return Some(t.clone());
    }
    jumps
        .get(&key)?
        .iter()
        .find_map(|c| reached(family, table, c, target, jumps, depth + 1))
}

/// What `dnat to A:P`, `dnat ip to A:P`, `dnat to [A6]:P` or
/// `redirect to :P` names (the words after the statement).
fn destination(after: &[&str]) -> String {
    after
        .iter()
        .skip_while(|x| **x != "to")
        .nth(1)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn with_target(mut r: NatRule, to: String) -> NatRule {
    let (to_addr, to_port) = split_target(&to);
    r.to = if to.is_empty() {
        "a local port".to_owned()
    } else {
        to
    };
    r.to_addr = to_addr;
    r.to_port = to_port;
    r
}

/// The protocol, destination ports and address a rule's words match;
/// None when it matches no TCP or UDP destination port.
fn port_match(w: &[&str], l: &RuleLine) -> Option<NatRule> {
    let mut proto = None;
    let mut ports = Vec::new();
    let mut daddr = None;
    let end = w
        .iter()
        .position(|x| matches!(*x, "jump" | "goto" | "dnat" | "redirect"))
        .unwrap_or(w.len());
    for i in 0..end.saturating_sub(2) {
        match (w[i], w[i + 1]) {
            ("tcp" | "udp", "dport") => {
                proto = Proto::parse(w[i]);
                ports = parse_ports(&w[i + 2..end]);
            }
            ("th", "dport") => ports = parse_ports(&w[i + 2..end]),
            ("l4proto", p) => proto = proto.or(Proto::parse(p)),
            ("ip" | "ip6", "daddr") => daddr = w[i + 2].parse::<IpAddr>().ok(),
            _ => {}
        }
    }
    let proto = proto?;
    if ports.is_empty() {
        return None;
    }
    Some(NatRule {
        family: l.family.clone(),
        table: l.table.clone(),
        chain: l.chain.clone(),
        handle: l.handle,
        proto,
        ports,
        daddr,
        to: String::new(),
        to_addr: None,
        to_port: None,
        action: "dnat".to_owned(),
        via: None,
    })
}

/// `80`, `8000-8080`, `{ 80, 443 }`, up to the next keyword.
fn parse_ports(words: &[&str]) -> Vec<(u16, u16)> {
    let mut v = Vec::new();
    let one = |s: &str| -> Option<(u16, u16)> {
        let s = s.trim_matches(|c| c == ',' || c == '{' || c == '}');
        match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|p| (p, p)),
        }
    };
    match words.first() {
        Some(&"{") => {
            for w in &words[1..] {
                if *w == "}" {
                    break;
                }
                v.extend(one(w));
            }
        }
        Some(w) => v.extend(one(w)),
        None => {}
    }
    v
}

fn split_target(to: &str) -> (Option<IpAddr>, Option<u16>) {
    if let Some(rest) = to.strip_prefix('[') {
        let (a, p) = rest.split_once(']').unwrap_or((rest, ""));
        return (
            a.parse().ok(),
            p.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    if let Some(p) = to.strip_prefix(':') {
        return (None, p.parse().ok());
    }
    match to.rsplit_once(':') {
        Some((a, p)) if !a.contains(':') => (a.parse().ok(), p.parse().ok()),
        _ => (to.parse().ok(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Docker 20.10 writes them through iptables-nft (Debian 12), read
    /// back with `nft -a list ruleset`.
    const DOCKER: &str = r#"table ip nat { # handle 1
	chain DOCKER { # handle 1
		iifname "docker0" counter packets 0 bytes 0 return # handle 4
		iifname != "docker0" tcp dport 18080 counter packets 0 bytes 0 dnat to 172.17.0.2:80 # handle 9
	}

	chain POSTROUTING { # handle 2
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 172.17.0.2 ip daddr 172.17.0.2 tcp dport 80 counter packets 0 bytes 0 masquerade # handle 10
	}

	chain OUTPUT { # handle 7
		type nat hook output priority -100; policy accept;
		ip daddr != 127.0.0.0/8 fib daddr type local counter packets 0 bytes 0 jump DOCKER # handle 8
	}
}
table ip filter { # handle 2
	chain DOCKER { # handle 1
		iifname != "docker0" oifname "docker0" ip daddr 172.17.0.2 tcp dport 80 counter packets 0 bytes 0 accept # handle 19
	}
}
"#;

    /// A hand-written native rule set, as an operator (or a CNI plugin)
    /// writes one.
    const NATIVE: &str = r#"table inet portmap { # handle 3
	chain out { # handle 1
		type nat hook output priority -100; policy accept;
		ip daddr 10.0.0.6 tcp dport { 80, 443 } dnat ip to 10.88.0.5:8080 # handle 2
		udp dport 5300-5310 redirect to :53 # handle 3
		meta l4proto tcp th dport 9100 dnat ip6 to [fd00::5]:9100 # handle 4
	}
}
"#;

    #[test]
    fn docker_rules_through_iptables_nft() {
        let rules = parse_ruleset(DOCKER);
        assert_eq!(rules.len(), 1, "{rules:?}");
        let r = &rules[0];
        assert_eq!(
            (r.family.as_str(), r.table.as_str(), r.chain.as_str()),
            ("ip", "nat", "DOCKER")
        );
        assert_eq!(r.handle, Some(9));
        assert_eq!(r.proto, Proto::Tcp);
        assert_eq!(r.ports, vec![(18080, 18080)]);
        assert_eq!(r.to, "172.17.0.2:80");
        assert_eq!(r.to_addr, Some("172.17.0.2".parse().unwrap()));
        assert_eq!(r.to_port, Some(80));
        assert!(r.covers(Proto::Tcp, "0.0.0.0".parse().unwrap(), 18080));
        assert!(r.covers(Proto::Tcp, "127.0.0.1".parse().unwrap(), 18080));
        assert!(!r.covers(Proto::Udp, "0.0.0.0".parse().unwrap(), 18080));
        assert!(!r.covers(Proto::Tcp, "0.0.0.0".parse().unwrap(), 18081));
        assert!(
            !r.covers(Proto::Tcp, "::1".parse().unwrap(), 18080),
            "an ip-family rule"
        );
    }

    #[test]
    fn native_rules_sets_ranges_redirects_and_addresses() {
        let rules = parse_ruleset(NATIVE);
        assert_eq!(rules.len(), 3, "{rules:?}");
        assert_eq!(rules[0].ports, vec![(80, 80), (443, 443)]);
        assert_eq!(rules[0].daddr, Some("10.0.0.6".parse().unwrap()));
        assert_eq!(rules[0].to, "10.88.0.5:8080");
        assert!(rules[0].covers(Proto::Tcp, "10.0.0.6".parse().unwrap(), 443));
        assert!(rules[0].covers(Proto::Tcp, "0.0.0.0".parse().unwrap(), 80));
        assert!(!rules[0].covers(Proto::Tcp, "10.0.0.7".parse().unwrap(), 80));
        assert_eq!(rules[1].action, "redirect");
        assert_eq!(rules[1].proto, Proto::Udp);
        assert_eq!(rules[1].ports, vec![(5300, 5310)]);
        assert_eq!(rules[1].to_port, Some(53));
        assert_eq!(rules[2].proto, Proto::Tcp);
        assert_eq!(rules[2].to_addr, Some("fd00::5".parse().unwrap()));
        assert_eq!(rules[2].to_port, Some(9100));
    }

    /// kube-proxy's shape (iptables mode, through iptables-nft): the
    /// NodePort rule jumps through a service chain to an endpoint chain,
    /// which translates without matching the port. Written after
    /// kube-proxy's documented chains, not recorded from a cluster.
    const NODEPORT: &str = r#"table ip nat { # handle 7
	chain KUBE-NODEPORTS { # handle 4
		meta l4proto tcp tcp dport 30080 counter packets 0 bytes 0 jump KUBE-EXT-WEB # handle 20
	}
	chain KUBE-EXT-WEB { # handle 5
		counter packets 0 bytes 0 jump KUBE-MARK-MASQ # handle 21
		counter packets 0 bytes 0 jump KUBE-SVC-WEB # handle 22
	}
	chain KUBE-MARK-MASQ { # handle 6
		counter packets 0 bytes 0 meta mark set mark or 0x4000 # handle 23
	}
	chain KUBE-SVC-WEB { # handle 8
		counter packets 0 bytes 0 jump KUBE-SEP-A # handle 24
	}
	chain KUBE-SEP-A { # handle 9
		meta l4proto tcp counter packets 0 bytes 0 dnat to 10.244.1.5:8080 # handle 25
	}
	chain KUBE-LOOP { # handle 10
		tcp dport 31000 jump KUBE-LOOP # handle 26
	}
}
"#;

    #[test]
    fn a_nodeport_jump_is_followed_to_its_endpoint() {
        let rules = parse_ruleset(NODEPORT);
        assert_eq!(rules.len(), 1, "{rules:?}");
        let r = &rules[0];
        assert_eq!(r.chain, "KUBE-NODEPORTS");
        assert_eq!(r.ports, vec![(30080, 30080)]);
        assert_eq!(r.to, "10.244.1.5:8080");
        assert_eq!(r.via.as_deref(), Some("KUBE-EXT-WEB"));
        assert_eq!(
            r.location(),
            "table ip nat, chain KUBE-NODEPORTS, handle 20, through chain KUBE-EXT-WEB"
        );
    }

    #[test]
    fn a_shadow_names_the_target_container_and_the_fix() {
        let web = super::super::container::from_docker_inspect(
            "docker",
            include_str!("testdata/docker-inspect-web.json"),
        )
        .unwrap();
        let dir = super::super::Directory::new(vec![web], Vec::new(), 0);
        let rules = parse_ruleset(DOCKER);
        let s = shadow_of(&rules, &dir, Proto::Tcp, "0.0.0.0".parse().unwrap(), 18080).unwrap();
        assert_eq!(
            s.describe(),
            "tcp/18080 is sent to 172.17.0.2:80 (container web (image bw-busybox:test, Compose \
             project shop, service front)) by a DNAT rule (table ip nat, chain DOCKER, handle 9)"
        );
        assert!(
            s.fix().contains("docker compose -p shop stop front"),
            "{}",
            s.fix()
        );
        let empty = super::super::Directory::default();
        let s = shadow_of(
            &rules,
            &empty,
            Proto::Tcp,
            "0.0.0.0".parse().unwrap(),
            18080,
        )
        .unwrap();
        assert!(
            s.fix().contains("nft delete rule ip nat DOCKER handle 9"),
            "{}",
            s.fix()
        );
        assert!(shadow_of(&rules, &empty, Proto::Tcp, "0.0.0.0".parse().unwrap(), 80).is_none());
    }
}
