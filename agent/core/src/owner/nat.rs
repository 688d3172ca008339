//! Ports taken by NAT rules: a destination-NAT rule sends a port's traffic
//! elsewhere, so a listener on it binds without error and never sees a
//! connection. Parsed from nftables' own listing (`nft -a list ruleset`),
//! which is what Debian's iptables writes through its nftables backend.
//!
//! The text listing, not `nft -j`: the JSON form of a rule written by
//! iptables-nft shows its DNAT target as an opaque `xt` statement without
//! the destination, which the text form prints (`dnat to 172.17.0.2:80`).

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
        format!(
            "table {} {}, chain {}{handle}",
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
/// a TCP or UDP destination port. Rules reached from no hook are kept too
/// (where they are jumped to is not followed).
pub fn parse_ruleset(text: &str) -> Vec<NatRule> {
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
                continue;
            }
            ["chain", c, "{", ..] => {
                chain = (*c).to_owned();
                continue;
            }
            _ => {}
        }
        if out.len() >= RULES_CAPACITY {
            break;
        }
        if let Some(r) = parse_rule(&words, &family, &table, &chain, handle) {
            out.push(r);
        }
    }
    out
}

fn parse_rule(
    w: &[&str],
    family: &str,
    table: &str,
    chain: &str,
    handle: Option<u64>,
) -> Option<NatRule> {
    let act = w.iter().position(|x| *x == "dnat" || *x == "redirect")?;
    let mut proto = None;
    let mut ports = Vec::new();
    let mut daddr = None;
    let mut i = 0;
    while i + 2 < act + 1 && i + 2 < w.len() {
        match (w[i], w[i + 1]) {
            ("tcp" | "udp", "dport") => {
                proto = Proto::parse(w[i]);
                ports = parse_ports(&w[i + 2..act]);
            }
            ("th", "dport") => ports = parse_ports(&w[i + 2..act]),
            ("l4proto", p) => proto = proto.or(Proto::parse(p)),
            ("ip" | "ip6", "daddr") => {
                daddr = w[i + 2].parse::<IpAddr>().ok();
            }
            _ => {}
        }
        i += 1;
    }
    let proto = proto?;
    if ports.is_empty() {
        return None;
    }
    // `dnat to A:P`, `dnat ip to A:P`, `dnat to [A6]:P`, `redirect to :P`.
    let to = w[act + 1..]
        .iter()
        .skip_while(|x| **x != "to")
        .nth(1)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let (to_addr, to_port) = split_target(&to);
    Some(NatRule {
        family: family.to_owned(),
        table: table.to_owned(),
        chain: chain.to_owned(),
        handle,
        proto,
        ports,
        daddr,
        to: if to.is_empty() {
            "a local port".to_owned()
        } else {
            to
        },
        to_addr,
        to_port,
        action: w[act].to_owned(),
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
