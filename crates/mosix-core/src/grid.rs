//! The grid: this cluster's partner clusters, from `MOSIX_ETC/mosix/partners` (partners(5)).
//!
//! ```text
//! # name  priority  map              secret               options
//! physics 10        physics.map      physics.secret
//! chem    50        /etc/mosix/chem.map chem.secret       notake idle
//! ```
//!
//! A cluster is its map. Node numbers are grid-wide: the maps of partners use ranges of
//! numbers no other cluster a node knows uses (mosix.map(5) lines already name their first
//! node), so a node number alone says which cluster a node is in, and every table keyed by
//! node (the gossip view, the balancer, the guests) holds the grid unchanged. MOSIX2 reached the
//! same by putting a cluster number in front of the node number (its 24-bit "pe"); here the
//! owners agree on ranges, and [`load`] refuses maps that overlap.
//!
//! Each partnership has its own secret (a file, mode 0600, as the cluster secret): a
//! connection between clusters is keyed by it, never by either cluster's own secret.
//!
//! The options of a partner: `nogo` (this cluster's processes do not go there), `notake`
//! (this cluster takes none of its processes), `idle` (its processes run here only while no
//! process of this cluster wants the CPU: they leave as soon as one does). The priority
//! (1..65534, lower is better, this cluster's own processes are 0) orders guests: a process of
//! a better-priority cluster displaces the guests of a worse one.
//!
//! Like the map, parsing reads text only ([`parse`]); [`load`] reads the partners' maps and
//! secrets and checks what needs them. Every problem is reported with file:line, all at once.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::config::Secret;
use crate::map::{self, ClusterMap};
use crate::node::NodeId;

/// The most partner lines a partners file may have.
pub const MAX_PARTNERS: usize = 64;
/// The largest partners file read.
pub const MAX_PARTNERS_BYTES: u64 = 1 << 20;
/// The priority of this cluster's own processes: better than any partner's.
pub const OWN_PRIORITY: u16 = 0;
pub use crate::config::{MAX_CLUSTER_NAME as MAX_NAME, valid_cluster_name as valid_name};

/// One partner line, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerLine {
    /// The 1-based line.
    pub line: usize,
    /// The partner's name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Its priority here: 1..65534, lower is better.
    pub priority: u16,
    /// Its map file (relative paths from the partners file's folder).
    pub map: PathBuf,
    /// The partnership's secret file (idem).
    pub secret: PathBuf,
    /// Terms: whether our processes go there, whether we take theirs, only when idle.
    pub terms: Terms,
}

/// What a partnership allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// This cluster's processes may go to the partner's nodes.
    pub go: bool,
    /// This cluster takes the partner's processes.
    pub take: bool,
    /// The partner's processes run here only while no process of this cluster wants the CPU.
    pub idle_only: bool,
}

impl Default for Terms {
    fn default() -> Self {
        Terms {
            go: true,
            take: true,
            idle_only: false,
        }
    }
}

/// One problem in a partners file (or a file it names), with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridError {
    /// The file.
    pub file: String,
    /// The 1-based line, when the problem is on one.
    pub line: Option<usize>,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for GridError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.what),
            None => write!(f, "{}: {}", self.file, self.what),
        }
    }
}

/// All the problems found; displays one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridErrors(pub Vec<GridError>);

impl fmt::Display for GridErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        map::one_per_line(f, &self.0)
    }
}

impl std::error::Error for GridErrors {}

/// Reads the text of a partners file, checking everything that needs no other file.
pub fn parse(file: &str, text: &str) -> Result<Vec<PartnerLine>, GridErrors> {
    let mut out: Vec<PartnerLine> = Vec::new();
    let mut errors = Vec::new();
    let err = |line: usize, what: String| GridError {
        file: file.to_owned(),
        line: Some(line),
        what,
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let body = raw.split('#').next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        let cols: Vec<&str> = body.split_whitespace().collect();
        if cols.len() < 4 {
            errors.push(err(
                line,
                format!(
                    "malformed line: expected 'name priority map secret [nogo] [notake] [idle]', found '{body}'"
                ),
            ));
            continue;
        }
        let mut bad = false;
        let name = cols[0];
        if !valid_name(name) {
            errors.push(err(
                line,
                format!(
                    "'{name}' is not a cluster name (1..{MAX_NAME} letters, digits, '-', '_', '.')"
                ),
            ));
            bad = true;
        } else if let Some(o) = out.iter().find(|p| p.name == name) {
            errors.push(err(
                line,
                format!("partner '{name}' is already named on line {}", o.line),
            ));
            bad = true;
        }
        let priority = match cols[1].parse::<u32>() {
            Ok(p) if (1..=65534).contains(&p) => p as u16,
            Ok(p) => {
                errors.push(err(
                    line,
                    format!("priority {p} is out of range 1..65534 (lower is better; 0 is this cluster's own)"),
                ));
                bad = true;
                0
            }
            Err(_) => {
                errors.push(err(line, format!("'{}' is not a priority", cols[1])));
                bad = true;
                0
            }
        };
        let mut terms = Terms::default();
        for opt in &cols[4..] {
            match *opt {
                "nogo" => terms.go = false,
                "notake" => terms.take = false,
                "idle" => terms.idle_only = true,
                other => {
                    errors.push(err(
                        line,
                        format!("unknown option '{other}' (options: nogo, notake, idle)"),
                    ));
                    bad = true;
                }
            }
        }
        if out.len() >= MAX_PARTNERS {
            errors.push(err(line, format!("more than {MAX_PARTNERS} partners")));
            break;
        }
        if !bad {
            out.push(PartnerLine {
                line,
                name: name.to_owned(),
                priority,
                map: PathBuf::from(cols[2]),
                secret: PathBuf::from(cols[3]),
                terms,
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(GridErrors(errors))
    }
}

/// A partner cluster, loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partner {
    /// Its name.
    pub name: String,
    /// Its priority here (lower is better).
    pub priority: u16,
    /// Its map.
    pub map: ClusterMap,
    /// The partnership's secret.
    pub secret: Secret,
    /// What the partnership allows.
    pub terms: Terms,
}

/// This node's grid: its partners (none: a cluster on its own).
#[derive(Debug, Clone, Default)]
pub struct Grid {
    /// The partners, in file order.
    pub partners: Vec<Partner>,
}

/// Which cluster a node is in, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose<'a> {
    /// This node's own cluster.
    Own,
    /// A partner.
    Partner(&'a Partner),
    /// No cluster this node knows.
    Unknown,
}

impl Grid {
    /// The partner a node belongs to.
    pub fn partner_of(&self, n: NodeId) -> Option<&Partner> {
        self.partners.iter().find(|p| p.map.contains(n))
    }

    /// The partner node an address belongs to.
    pub fn node_of(&self, a: Ipv4Addr) -> Option<(NodeId, &Partner)> {
        self.partners
            .iter()
            .find_map(|p| p.map.node_of(a).map(|n| (n, p)))
    }

    /// A partner by name.
    pub fn by_name(&self, name: &str) -> Option<&Partner> {
        self.partners.iter().find(|p| p.name == name)
    }

    /// Every node of every partner, in increasing order.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.partners.iter().flat_map(|p| p.map.nodes()).collect();
        v.sort_unstable();
        v
    }

    /// The nodes of each partner, one list per partner (gossip crosses to each in turn).
    pub fn clusters(&self) -> Vec<Vec<NodeId>> {
        self.partners.iter().map(|p| p.map.nodes()).collect()
    }

    /// Which cluster node `n` is in (`own`: this cluster's map).
    pub fn whose<'a>(&'a self, own: &ClusterMap, n: NodeId) -> Whose<'a> {
        if own.contains(n) {
            Whose::Own
        } else {
            self.partner_of(n).map_or(Whose::Unknown, Whose::Partner)
        }
    }

    /// Whether this node has partners at all.
    pub fn is_empty(&self) -> bool {
        self.partners.is_empty()
    }
}

/// A process on a node, as displacement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The process (its pid here).
    pub id: u64,
    /// Its cluster's priority here: [`OWN_PRIORITY`] for this cluster's processes (guests of
    /// its other nodes included), the partner's for a partner's guest.
    pub priority: u16,
    /// A guest of a partner whose processes run here only while no process of this cluster
    /// wants the CPU (`idle`).
    pub idle_only: bool,
    /// How much of the time it wants a CPU, per-mille (1000: CPU-bound).
    pub demand_permille: u32,
    /// Whether it may be asked to leave (a guest of another cluster that is not moving).
    pub movable: bool,
}

/// Demand, per-mille, above which a process of this cluster counts as wanting the CPU for a
/// partner's `idle` terms.
pub const WANTS_CPU_PERMILLE: u32 = 300;

/// The guests of other clusters that must leave this node now, worst priority first: the
/// node's `cpus` go to the best priorities; a guest that would not fit in what is left, when
/// a process of a strictly better priority wants the CPU, is displaced (guests of the same
/// priority share, as processes of one cluster do). A guest of an `idle` partner leaves as
/// soon as any process of this cluster wants a CPU.
pub fn displace(cpus: u32, claims: &[Claim]) -> Vec<u64> {
    let mut order: Vec<&Claim> = claims.iter().collect();
    // Best priority first; among equals, the busier first (it is the one that will keep a CPU).
    order.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(b.demand_permille.cmp(&a.demand_permille))
            .then(a.id.cmp(&b.id))
    });
    let own_wants = claims
        .iter()
        .any(|c| c.priority == OWN_PRIORITY && c.demand_permille >= WANTS_CPU_PERMILLE);
    // Capacity in thousandths of a CPU; a quarter of a CPU of slack for measurement noise.
    let capacity = u64::from(cpus.max(1)) * 1000 + 250;
    let mut used = 0u64;
    let mut better = 0u64;
    let mut out = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let p = order[i].priority;
        let same: Vec<&Claim> = order[i..]
            .iter()
            .copied()
            .take_while(|c| c.priority == p)
            .collect();
        i += same.len();
        for c in &same {
            let d = u64::from(c.demand_permille.min(1000));
            let idle_out = c.idle_only && own_wants;
            if c.movable && p != OWN_PRIORITY && (idle_out || (better > 0 && used + d > capacity)) {
                out.push(c.id);
            } else {
                used += d;
            }
        }
        better = used;
    }
    out.reverse();
    out
}

/// Where a partners file names a file: as written when absolute, else beside the partners
/// file.
fn beside(partners_file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        partners_file
            .parent()
            .map_or_else(|| p.to_owned(), |d| d.join(p))
    }
}

/// Loads the partners file at `path` (absent: no partners): reads and resolves each partner's
/// map, loads each partnership's secret (owned by `owner_uid`, mode 0600), and checks that no
/// node number or address is in two clusters (`own` is this cluster's map). Every problem is
/// reported, with the partners file's line or the map's own file:line.
pub fn load(
    path: &Path,
    own: &ClusterMap,
    owner_uid: u32,
    resolver: &dyn Fn(&str) -> Result<Ipv4Addr, String>,
) -> Result<Grid, GridErrors> {
    let shown = path.display().to_string();
    let text = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Grid::default()),
        Err(e) => return Err(one(&shown, None, format!("cannot read: {e}"))),
        Ok(m) if m.len() > MAX_PARTNERS_BYTES => {
            return Err(one(
                &shown,
                None,
                format!("the file is larger than {MAX_PARTNERS_BYTES} bytes"),
            ));
        }
        Ok(_) => std::fs::read_to_string(path)
            .map_err(|e| one(&shown, None, format!("cannot read: {e}")))?,
    };
    let lines = parse(&shown, &text)?;
    let mut errors = Vec::new();
    let mut grid = Grid::default();
    for l in lines {
        let at = |what: String| GridError {
            file: shown.clone(),
            line: Some(l.line),
            what,
        };
        let map_path = beside(path, &l.map);
        let map_name = map_path.display().to_string();
        let map = map::read_map_text(&map_name)
            .and_then(|t| map::parse_and_resolve(&map_name, &t, resolver));
        let map = match map {
            Ok(m) => m,
            Err(es) => {
                errors.push(at(format!("the map of partner '{}' is wrong:", l.name)));
                errors.extend(es.0.into_iter().map(|e| GridError {
                    file: e.file,
                    line: e.line,
                    what: e.kind.to_string(),
                }));
                continue;
            }
        };
        let secret = match Secret::load(&beside(path, &l.secret), owner_uid) {
            Ok(s) => s,
            Err(e) => {
                errors.push(at(format!("the secret of partner '{}': {e}", l.name)));
                continue;
            }
        };
        let mut clash = false;
        let mut others: Vec<(String, &ClusterMap)> = vec![("this cluster".to_owned(), own)];
        others.extend(
            grid.partners
                .iter()
                .map(|p: &Partner| (format!("partner '{}'", p.name), &p.map)),
        );
        for (who, m) in others {
            for r in map.ranges() {
                if let Some(o) = m
                    .ranges()
                    .iter()
                    .find(|o| o.first <= r.last() && r.first <= o.last())
                {
                    errors.push(at(format!(
                        "nodes {}..{} of partner '{}' overlap nodes {}..{} of {who}: node numbers are grid-wide, give each cluster its own range",
                        r.first,
                        r.last(),
                        l.name,
                        o.first,
                        o.last()
                    )));
                    clash = true;
                }
            }
            for n in map.nodes() {
                for a in map.addrs_of(n) {
                    if let Some(o) = m.node_of(a) {
                        errors.push(at(format!(
                            "address {a} of node {n} of partner '{}' is node {o} of {who}",
                            l.name
                        )));
                        clash = true;
                    }
                }
            }
        }
        if !clash {
            grid.partners.push(Partner {
                name: l.name,
                priority: l.priority,
                map,
                secret,
                terms: l.terms,
            });
        }
    }
    if errors.is_empty() {
        Ok(grid)
    } else {
        Err(GridErrors(errors))
    }
}

fn one(file: &str, line: Option<usize>, what: String) -> GridErrors {
    GridErrors(vec![GridError {
        file: file.to_owned(),
        line,
        what,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_partners_file_is_read_with_every_problem_named_by_line() {
        let ok = parse(
            "p",
            "# comment\nphys 10 phys.map phys.secret\n\nchem 50 /x/chem.map c.s notake idle # x\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].line, 2);
        assert_eq!(ok[0].terms, Terms::default());
        assert_eq!(
            ok[1].terms,
            Terms {
                go: true,
                take: false,
                idle_only: true
            }
        );
        let bad = parse(
            "p",
            "a 10 m\nb/x 10 m s\nc 0 m s\nd x m s\ne 5 m s sometimes\nf 5 m s\nf 6 m s\n",
        )
        .unwrap_err();
        let text = bad.to_string();
        for want in [
            "p:1: malformed line",
            "p:2: 'b/x' is not a cluster name",
            "p:3: priority 0 is out of range",
            "p:4: 'x' is not a priority",
            "p:5: unknown option 'sometimes'",
            "p:7: partner 'f' is already named on line 6",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        assert_eq!(bad.0.len(), 6);
    }

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn uid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(std::env::temp_dir()).map(|_| ()).unwrap();
        let probe = std::env::temp_dir().join(format!("mosix-grid-uid-{}", std::process::id()));
        std::fs::write(&probe, b"").unwrap();
        let u = std::fs::metadata(&probe).unwrap().uid();
        let _ = std::fs::remove_file(&probe);
        u
    }

    #[test]
    fn partners_load_with_their_maps_and_secrets_and_must_not_overlap() {
        let dir = std::env::temp_dir().join(format!("mosix-grid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let own = map::parse_and_resolve("own", "1 10.0.0.1 2\n", &|_| Err("no".into())).unwrap();
        write(&dir, "b.map", "101 10.0.1.1 2\n");
        write(&dir, "c.map", "2 10.0.2.1 1\n");
        write(&dir, "d.map", "201 10.0.0.2 1\n");
        write(&dir, "s", "0123456789abcdef0123456789abcdef\n");
        let file = dir.join("partners");
        let nothing = load(&file, &own, uid(), &|_| Err("no".into())).unwrap();
        assert!(nothing.is_empty());
        std::fs::write(
            &file,
            "b 10 b.map s\nc 20 c.map s\nd 30 d.map s\ne 40 missing.map s\n",
        )
        .unwrap();
        let e = load(&file, &own, uid(), &|_| Err("no".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2: nodes 2..2 of partner 'c' overlap nodes 1..2 of this cluster"));
        assert!(e.contains(":3: address 10.0.0.2 of node 201 of partner 'd' is node 2 of this"));
        assert!(e.contains(":4: the map of partner 'e' is wrong"));
        assert!(e.contains("missing.map: cannot read"));
        assert!(!e.contains(":1:"), "{e}");
        std::fs::write(&file, "b 10 b.map s nogo\n").unwrap();
        let g = load(&file, &own, uid(), &|_| Err("no".into())).unwrap();
        let n101 = NodeId::new(101).unwrap();
        assert_eq!(g.partner_of(n101).map(|p| p.name.as_str()), Some("b"));
        assert!(g.partner_of(NodeId::new(1).unwrap()).is_none());
        assert_eq!(
            g.node_of(Ipv4Addr::new(10, 0, 1, 2)).map(|x| x.0.get()),
            Some(102)
        );
        assert!(!g.partners[0].terms.go);
        assert_eq!(g.nodes().len(), 2);
        std::fs::set_permissions(dir.join("s"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&file, &own, uid(), &|_| Err("no".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":1: the secret of partner 'b'") && e.contains("chmod 600"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn claim(id: u64, priority: u16, demand_permille: u32) -> Claim {
        Claim {
            id,
            priority,
            idle_only: false,
            demand_permille,
            movable: priority != OWN_PRIORITY,
        }
    }

    #[test]
    fn guests_of_worse_priorities_make_room_for_better_ones_and_equals_share() {
        // Two CPUs, two of ours and two guests of a partner: the guests leave.
        let v = displace(
            2,
            &[
                claim(1, 0, 1000),
                claim(2, 0, 1000),
                claim(3, 10, 1000),
                claim(4, 10, 1000),
            ],
        );
        assert_eq!(v.len(), 2);
        assert!(v.contains(&3) && v.contains(&4));
        // One of ours on two CPUs: one guest stays.
        assert_eq!(
            displace(
                2,
                &[claim(1, 0, 1000), claim(3, 10, 1000), claim(4, 10, 1000)]
            )
            .len(),
            1
        );
        // Ours asleep: nobody is displaced.
        assert!(displace(1, &[claim(1, 0, 10), claim(3, 10, 1000)]).is_empty());
        // Guests alone, however many, share: the balancer spreads them, displacement does not.
        assert!(
            displace(
                1,
                &[claim(3, 10, 1000), claim(4, 10, 1000), claim(5, 10, 1000)]
            )
            .is_empty()
        );
        // A better partner's guest displaces a worse partner's, the worst first.
        let v = displace(
            1,
            &[claim(3, 20, 1000), claim(4, 10, 1000), claim(5, 30, 1000)],
        );
        assert_eq!(v, vec![5, 3]);
        // A guest that cannot be moved now stays and counts.
        let mut stuck = claim(3, 10, 1000);
        stuck.movable = false;
        assert!(displace(1, &[claim(1, 0, 1000), stuck]).is_empty());
        // An idle-only partner leaves as soon as one of ours wants a CPU, even with room.
        let mut idle = claim(6, 10, 1000);
        idle.idle_only = true;
        assert_eq!(displace(4, &[claim(1, 0, 900), idle]), vec![6]);
        assert!(displace(4, &[claim(1, 0, 100), idle]).is_empty());
    }
}
