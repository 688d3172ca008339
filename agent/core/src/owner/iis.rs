//! IIS as http.sys's owner: the sites of `applicationHost.config`
//! (`%windir%\System32\inetsrv\config`), their bindings and the app pool
//! each site's root application runs in. The element and attribute names
//! are Microsoft's documented schema (`system.applicationHost/sites`,
//! `site`, `bindings/binding` with `protocol` and `bindingInformation`
//! `IP:port:host`, `application` with `applicationPool`, the site's and the
//! server's `applicationDefaults`, `applicationPools/add`). Pure: the
//! platform reads the file and hands its text in.

use std::net::IpAddr;

/// Sites kept at most (a host with more is unusual; the rest are counted).
pub const MAX_SITES: usize = 4096;
/// The app pool an application without one runs in (IIS's default).
pub const DEFAULT_APP_POOL: &str = "DefaultAppPool";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// `http` or `https`: the protocols http.sys serves (net.tcp and the
    /// other WAS protocols are not http.sys's and are not kept).
    pub protocol: String,
    /// As written: `*:80:`, `10.0.0.5:80:`, `*:80:www.contoso.com`.
    pub information: String,
    /// None for `*` (every address).
    pub ip: Option<IpAddr>,
    pub port: u16,
    /// The host name the binding answers for; empty: any.
    pub host: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    pub id: Option<u64>,
    /// `serverAutoStart` (true unless the file says false): a site IIS does
    /// not start, which is how a site stopped in IIS Manager is saved.
    pub auto_start: bool,
    pub bindings: Vec<Binding>,
    /// The app pool of the site's root application (`/`), else of the
    /// site's or the server's application defaults, else IIS's default.
    pub app_pool: String,
    /// Other app pools the site's applications run in, in file order.
    pub other_pools: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IisConfig {
    pub sites: Vec<Site>,
    /// App pools IIS does not start (`autoStart="false"`).
    pub pools_not_started: Vec<String>,
    /// Bindings not understood (a malformed `bindingInformation`), each
    /// named: `site 'X': bindingInformation "..."`.
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IisConfigError {
    #[error("applicationHost.config is not XML: {0}")]
    Xml(String),
    #[error("applicationHost.config has no system.applicationHost/sites section")]
    NoSites,
}

/// A site's binding that claims a port, with the site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteClaim<'a> {
    pub site: &'a Site,
    pub binding: &'a Binding,
}

impl IisConfig {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, IisConfigError> {
        let doc =
            roxmltree::Document::parse(text).map_err(|e| IisConfigError::Xml(e.to_string()))?;
        let host = doc
            .root_element()
            .children()
            .find(|n| n.has_tag_name("system.applicationHost"))
            .ok_or(IisConfigError::NoSites)?;
        let sites_el = child(host, "sites").ok_or(IisConfigError::NoSites)?;
        let server_default_pool = child(sites_el, "applicationDefaults")
            .and_then(|d| d.attribute("applicationPool"))
            .filter(|p| !p.is_empty());
        let default_bindings: Vec<roxmltree::Node> = child(sites_el, "siteDefaults")
            .and_then(|d| child(d, "bindings"))
            .map(|b| b.children().filter(|n| n.has_tag_name("binding")).collect())
            .unwrap_or_default();
        let mut out = IisConfig::default();
        if let Some(pools) = child(host, "applicationPools") {
            for p in pools.children().filter(|n| n.has_tag_name("add")) {
                if let (Some(name), Some("false")) = (p.attribute("name"), p.attribute("autoStart"))
                {
                    out.pools_not_started.push(name.to_owned());
                }
            }
        }
        for s in sites_el.children().filter(|n| n.has_tag_name("site")) {
            if out.sites.len() >= MAX_SITES {
                out.skipped.push(format!(
                    "site '{}': more than {MAX_SITES} sites",
                    s.attribute("name").unwrap_or("?")
                ));
                continue;
            }
            let name = s.attribute("name").unwrap_or("").to_owned();
            let site_default_pool = child(s, "applicationDefaults")
                .and_then(|d| d.attribute("applicationPool"))
                .filter(|p| !p.is_empty());
            let fallback = site_default_pool
                .or(server_default_pool)
                .unwrap_or(DEFAULT_APP_POOL);
            let mut app_pool = None;
            let mut other_pools = Vec::new();
            for a in s.children().filter(|n| n.has_tag_name("application")) {
                let pool = a
                    .attribute("applicationPool")
                    .filter(|p| !p.is_empty())
                    .unwrap_or(fallback);
                if a.attribute("path") == Some("/") {
                    app_pool = Some(pool.to_owned());
                } else if !other_pools.iter().any(|p| p == pool) {
                    other_pools.push(pool.to_owned());
                }
            }
            let app_pool = app_pool.unwrap_or_else(|| fallback.to_owned());
            other_pools.retain(|p| *p != app_pool);
            // A site without a bindings element takes the server's defaults.
            let own: Option<Vec<roxmltree::Node>> = child(s, "bindings")
                .map(|b| b.children().filter(|n| n.has_tag_name("binding")).collect());
            let mut bindings = Vec::new();
            for b in own.as_ref().unwrap_or(&default_bindings) {
                let protocol = b.attribute("protocol").unwrap_or("").to_ascii_lowercase();
                if protocol != "http" && protocol != "https" {
                    continue;
                }
                let info = b.attribute("bindingInformation").unwrap_or("");
                match parse_binding_information(info) {
                    Some((ip, port, host)) => bindings.push(Binding {
                        protocol,
                        information: info.to_owned(),
                        ip,
                        port,
                        host,
                    }),
                    None => out
                        .skipped
                        .push(format!("site '{name}': bindingInformation \"{info}\"")),
                }
            }
            out.sites.push(Site {
                id: s.attribute("id").and_then(|i| i.parse().ok()),
                auto_start: s.attribute("serverAutoStart") != Some("false"),
                name,
                bindings,
                app_pool,
                other_pools,
            });
        }
        Ok(out)
    }

    /// The bindings that claim `port` on `addr` (None: any address),
    /// started sites first, then in file order.
    pub fn claims(&self, port: u16, addr: Option<IpAddr>) -> Vec<SiteClaim<'_>> {
        let mut v: Vec<SiteClaim> = self
            .sites
            .iter()
            .flat_map(|site| {
                site.bindings
                    .iter()
                    .filter(move |b| {
                        b.port == port
                            && match (b.ip, addr) {
                                (None, _) | (_, None) => true,
                                (Some(a), Some(want)) => a == want || want.is_unspecified(),
                            }
                    })
                    .map(move |binding| SiteClaim { site, binding })
            })
            .collect();
        v.sort_by_key(|c| !c.site.auto_start);
        v
    }

    /// A site with an http and an https binding on the same port: the seed
    /// stories' "SSL port set to the HTTP port", as IIS 7 and later keep it.
    pub fn http_and_https_on(&self, port: u16) -> Option<SamePort<'_>> {
        self.sites.iter().find_map(|site| {
            let on = |p: &str| {
                site.bindings
                    .iter()
                    .find(|b| b.port == port && b.protocol == p)
            };
            Some(SamePort {
                site,
                http: on("http")?,
                https: on("https")?,
            })
        })
    }

    /// Whether IIS starts the pool by itself.
    pub fn pool_started(&self, pool: &str) -> bool {
        !self
            .pools_not_started
            .iter()
            .any(|p| p.eq_ignore_ascii_case(pool))
    }
}

/// A site whose http and https bindings share a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SamePort<'a> {
    pub site: &'a Site,
    pub http: &'a Binding,
    pub https: &'a Binding,
}

impl SamePort<'_> {
    /// The appcmd line that moves the https binding to `port`.
    pub fn appcmd_https(&self, port: &str) -> String {
        let ip = match self.https.ip {
            Some(std::net::IpAddr::V6(a)) => format!("[{a}]"),
            Some(a) => a.to_string(),
            None => "*".to_owned(),
        };
        SiteClaim {
            site: self.site,
            binding: self.https,
        }
        .appcmd(&format!("{ip}:{port}:{}", self.https.host))
    }
}

impl SiteClaim<'_> {
    /// `IIS site 'Default Web Site' (app pool DefaultAppPool), binding *:80:`,
    /// with `, stopped` for a site IIS does not start.
    pub fn label(&self) -> String {
        let stopped = if self.site.auto_start {
            ""
        } else {
            ", stopped"
        };
        format!(
            "IIS site '{}' (app pool {}{stopped}), binding {}",
            self.site.name, self.site.app_pool, self.binding.information
        )
    }

    /// The binding as appcmd selects it, to change its address or port.
    pub fn appcmd(&self, new_information: &str) -> String {
        format!(
            "%windir%\\system32\\inetsrv\\appcmd set site /site.name:\"{}\" \
             /bindings.[protocol='{}',bindingInformation='{}'].bindingInformation:{new_information}",
            self.site.name, self.binding.protocol, self.binding.information
        )
    }

    /// How to give the site's binding the address `addr`: IIS Manager's
    /// dialog and the appcmd line.
    pub fn rebind(&self, addr: &str) -> String {
        let new = self.with_address(addr);
        format!(
            "change its binding {} to {new} (IIS Manager: Sites > {} > Bindings, or `{}`)",
            self.binding.information,
            self.site.name,
            self.appcmd(&new)
        )
    }

    /// The binding's information with another address: `10.0.0.5:80:` for
    /// `*:80:`, the host name kept.
    pub fn with_address(&self, addr: &str) -> String {
        format!("{addr}:{}:{}", self.binding.port, self.binding.host)
    }
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(tag))
}

/// `IP:port:host`: `*:80:`, `10.0.0.5:443:`, `[::1]:80:`, `*:80:www.x.com`.
/// The address is `*` or an IP (IPv6 in brackets), the port 1-65535.
pub fn parse_binding_information(info: &str) -> Option<(Option<IpAddr>, u16, String)> {
    let (addr, rest) = if let Some(r) = info.strip_prefix('[') {
        let (a, r) = r.split_once(']')?;
        (a, r.strip_prefix(':')?)
    } else {
        info.split_once(':')?
    };
    let (port, host) = rest.split_once(':').unwrap_or((rest, ""));
    let ip = match addr {
        "*" | "" => None,
        a => Some(a.parse().ok()?),
    };
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    Some((ip, port, host.to_owned()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Shaped as Microsoft documents the file: pools, several sites, a
    /// specific-IP binding, a host-header binding, an HTTPS binding, a site
    /// with two bindings, a stopped site, a non-HTTP binding, a site whose
    /// root application names its pool and one that takes the defaults,
    /// and a site whose http and https bindings share a port (the Windows
    /// stories read it too).
    pub(crate) const CONFIG: &str = include_str!("applicationHost.test.config");

    #[test]
    fn sites_bindings_and_pools_as_microsoft_documents_the_file() {
        let c = IisConfig::parse(CONFIG).unwrap();
        let names: Vec<&str> = c.sites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["Default Web Site", "Shop", "Intranet", "Archive", "Tickets"]
        );
        let dws = &c.sites[0];
        assert_eq!(dws.id, Some(1));
        assert_eq!(dws.app_pool, "DefaultAppPool", "the server's defaults");
        assert_eq!(dws.bindings.len(), 1, "net.tcp is not http.sys's");
        assert_eq!(dws.bindings[0].information, "*:80:");
        assert_eq!(dws.bindings[0].ip, None);
        let shop = &c.sites[1];
        assert_eq!(shop.app_pool, "ShopPool");
        assert_eq!(shop.other_pools, ["ShopApiPool"]);
        assert_eq!(shop.bindings[0].ip, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(shop.bindings[0].port, 8080);
        assert_eq!(shop.bindings[1].protocol, "https");
        assert_eq!(shop.bindings[1].port, 443);
        assert_eq!(shop.bindings[1].host, "shop.contoso.com");
        let intranet = &c.sites[2];
        assert_eq!(intranet.app_pool, "IntranetPool", "the site's own defaults");
        assert_eq!(intranet.bindings[1].ip, Some("fd00::5".parse().unwrap()));
        let archive = &c.sites[3];
        assert!(!archive.auto_start);
        assert!(c.sites.iter().filter(|s| !s.auto_start).count() == 1);
        assert_eq!(archive.bindings.len(), 1);
        assert_eq!(
            c.skipped,
            ["site 'Archive': bindingInformation \"*:notaport:\""]
        );
        assert!(!c.pool_started("ArchivePool"));
        assert!(c.pool_started("ShopPool"));
    }

    #[test]
    fn the_sites_whose_bindings_claim_a_port_started_first() {
        let c = IisConfig::parse(CONFIG).unwrap();
        let on = |port, addr: Option<&str>| -> Vec<String> {
            c.claims(port, addr.map(|a| a.parse().unwrap()))
                .iter()
                .map(|x| x.label())
                .collect()
        };
        assert_eq!(
            on(80, None),
            [
                "IIS site 'Default Web Site' (app pool DefaultAppPool), binding *:80:",
                "IIS site 'Intranet' (app pool IntranetPool), binding *:80:intranet.contoso.com"
            ]
        );
        // 8080: the stopped site after the started one; a specific address
        // claims only itself (and the wildcard holder).
        assert_eq!(
            on(8080, Some("0.0.0.0")),
            [
                "IIS site 'Shop' (app pool ShopPool), binding 10.0.0.5:8080:",
                "IIS site 'Archive' (app pool ArchivePool, stopped), binding *:8080:"
            ]
        );
        assert_eq!(
            on(8080, Some("10.0.0.6")),
            ["IIS site 'Archive' (app pool ArchivePool, stopped), binding *:8080:"]
        );
        assert_eq!(on(443, None).len(), 1);
        let same = c.http_and_https_on(8443).unwrap();
        assert_eq!(same.site.name, "Tickets");
        assert!(c.http_and_https_on(80).is_none());
        assert!(on(21, None).is_empty());
        let c80 = c.claims(80, None);
        assert_eq!(c80[0].with_address("10.0.0.5"), "10.0.0.5:80:");
        assert_eq!(
            c80[0].appcmd("10.0.0.5:80:"),
            "%windir%\\system32\\inetsrv\\appcmd set site /site.name:\"Default Web Site\" \
             /bindings.[protocol='http',bindingInformation='*:80:'].bindingInformation:10.0.0.5:80:"
        );
    }

    #[test]
    fn binding_information_is_ip_port_host() {
        let p = parse_binding_information;
        assert_eq!(p("*:80:"), Some((None, 80, String::new())));
        assert_eq!(
            p("10.0.0.5:443:"),
            Some((Some("10.0.0.5".parse().unwrap()), 443, String::new()))
        );
        assert_eq!(
            p("[::1]:80:x.y"),
            Some((Some("::1".parse().unwrap()), 80, "x.y".into()))
        );
        assert_eq!(p(":80:"), Some((None, 80, String::new())));
        for bad in [
            "808:*",
            "*:0:",
            "*:99999:",
            "nonsense",
            "[::1:80:",
            "1.2.3:80:",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_file_that_is_not_the_configuration_is_an_error_that_says_so() {
        assert!(matches!(
            IisConfig::parse("<configuration/>"),
            Err(IisConfigError::NoSites)
        ));
        let e = IisConfig::parse("<configuration><sites>").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("applicationHost.config is not XML"),
            "{e}"
        );
    }
}
