//! The cluster map, `/etc/mosix.map` (mosix.map(5)): which node numbers exist and where they are.
//!
//! ```text
//! # first-node  address-or-hostname  count
//! 1   10.0.0.1   8        # nodes 1..8 are 10.0.0.1 .. 10.0.0.8
//! 20  node20.lan 1
//! 5   192.168.1.1 ALIAS   # node 5 is also known by this address (a gateway)
//! ```
//!
//! Parsing is split in two so that it stays testable without a resolver: [`parse`] reads the
//! text into [`MapLine`]s and checks what can be checked on text alone; [`resolve`] turns host
//! names into addresses (through a resolver the caller passes in) and checks the rules that need
//! addresses. Every problem is reported with the file name and line, and all problems of a file
//! are reported at once rather than only the first.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use crate::node::NodeId;

/// The largest number of entry lines a map may have (the classic limit).
pub const MAX_ENTRIES: usize = 256;

/// The largest map file we read, so that a wrong path (a disk image, /dev/zero) is refused
/// before it is read into memory. 256 entries with long host names and comments fit easily.
pub const MAX_MAP_BYTES: u64 = 1 << 20;

/// What the host column of a line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A literal IPv4 address.
    Addr(Ipv4Addr),
    /// A host name, resolved through the system resolver (`/etc/hosts`, DNS).
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Addr(a) => a.fmt(f),
            Host::Name(n) => n.fmt(f),
        }
    }
}

/// One entry line of a map, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapLine {
    /// `first host count`: nodes first..first+count-1 at consecutive addresses from host's.
    Range {
        /// The 1-based line number in the file.
        line: usize,
        /// The first node of the range.
        first: NodeId,
        /// The host of the first node.
        host: Host,
        /// How many nodes (at least 1).
        count: u16,
    },
    /// `node host ALIAS`: node is also known by host's address.
    Alias {
        /// The 1-based line number in the file.
        line: usize,
        /// The node that has another address.
        node: NodeId,
        /// The other address.
        host: Host,
    },
}

impl MapLine {
    /// The line number this entry came from.
    pub fn line(&self) -> usize {
        match self {
            MapLine::Range { line, .. } | MapLine::Alias { line, .. } => *line,
        }
    }
}

/// One problem in a map, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    /// The file name as given by the user ("-" for standard input).
    pub file: String,
    /// The 1-based line, when the problem is on a line.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: MapErrorKind,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.kind),
            None => write!(f, "{}: {}", self.file, self.kind),
        }
    }
}

/// The kinds of problems a map can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapErrorKind {
    /// The line does not have the three columns.
    #[error(
        "malformed line: expected 'first-node address-or-hostname count' or 'node address ALIAS', found {0}"
    )]
    Malformed(String),
    /// The first column is not a number.
    #[error("'{0}' is not a node number")]
    BadNode(String),
    /// A node number outside 1..65535.
    #[error("node number {0} is out of range 1..65535")]
    NodeRange(u64),
    /// The count column is not a number (nor ALIAS).
    #[error("'{0}' is neither a node count nor ALIAS")]
    BadCount(String),
    /// A count of zero.
    #[error("the node count must be at least 1")]
    ZeroCount,
    /// The range runs past node 65535.
    #[error("nodes {first}..{last} run past node 65535")]
    RangePastMax {
        /// First node.
        first: u16,
        /// The last node the count asks for.
        last: u64,
    },
    /// The host column is not a valid address or host name.
    #[error("'{0}' is not an IPv4 address or a host name")]
    BadHost(String),
    /// An IPv6 address.
    #[error("'{0}' is an IPv6 address; the map takes IPv4 addresses only")]
    Ipv6(String),
    /// More than [`MAX_ENTRIES`] entry lines.
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    /// A host name that does not resolve.
    #[error("cannot resolve host '{host}': {reason}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// The range's addresses run past 255.255.255.255.
    #[error("{count} addresses from {start} run past 255.255.255.255")]
    AddressPastMax {
        /// First address.
        start: Ipv4Addr,
        /// Count.
        count: u16,
    },
    /// Two ranges share node numbers.
    #[error("nodes {first}..{last} overlap nodes {other_first}..{other_last} of line {other_line}")]
    Overlap {
        /// This range's first node.
        first: u16,
        /// This range's last node.
        last: u16,
        /// The other range's first node.
        other_first: u16,
        /// The other range's last node.
        other_last: u16,
        /// The other range's line.
        other_line: usize,
    },
    /// One address belongs to two nodes.
    #[error(
        "address {addr} is given to node {node} here and to node {other_node} on line {other_line}"
    )]
    DuplicateAddress {
        /// The address.
        addr: Ipv4Addr,
        /// The node this line gives it to.
        node: u16,
        /// The node the other line gives it to.
        other_node: u16,
        /// The other line.
        other_line: usize,
    },
    /// ALIAS of a node no range defines.
    #[error("ALIAS for node {0}, which no range of the map defines")]
    AliasUnknown(u16),
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(String),
    /// The file is larger than [`MAX_MAP_BYTES`].
    #[error("the file is larger than {MAX_MAP_BYTES} bytes; is this really a map?")]
    TooLarge,
    /// The map has no entries at all.
    #[error("the map has no entries")]
    Empty,
}

/// All the problems found in one map; displays one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapErrors(pub Vec<MapError>);

impl fmt::Display for MapErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        one_per_line(f, &self.0)
    }
}

/// Writes `items` one per line (the problems of a file, all at once).
pub(crate) fn one_per_line<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
) -> fmt::Result {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            writeln!(f)?;
        }
        e.fmt(f)?;
    }
    Ok(())
}

impl std::error::Error for MapErrors {}

/// Reads the text of a map into entry lines, checking everything that needs no resolver.
pub fn parse(file: &str, text: &str) -> Result<Vec<MapLine>, MapErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut entries = 0usize;
    let err = |line: usize, kind| MapError {
        file: file.to_owned(),
        line: Some(line),
        kind,
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("");
        let fields: Vec<&str> = content.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        entries += 1;
        if entries == MAX_ENTRIES + 1 {
            errors.push(err(line, MapErrorKind::TooManyEntries));
        }
        if fields.len() != 3 {
            let found = match fields.len() {
                1 => "1 column".to_owned(),
                n => format!("{n} columns"),
            };
            errors.push(err(line, MapErrorKind::Malformed(found)));
            continue;
        }
        let node = match parse_node(fields[0]) {
            Ok(n) => Some(n),
            Err(kind) => {
                errors.push(err(line, kind));
                None
            }
        };
        let host = match parse_host(fields[1]) {
            Ok(h) => Some(h),
            Err(kind) => {
                errors.push(err(line, kind));
                None
            }
        };
        let third = fields[2];
        if third.eq_ignore_ascii_case("alias") {
            if let (Some(node), Some(host)) = (node, host) {
                out.push(MapLine::Alias { line, node, host });
            }
            continue;
        }
        let count = match third.parse::<u64>() {
            Ok(0) => {
                errors.push(err(line, MapErrorKind::ZeroCount));
                None
            }
            Ok(c) => Some(c),
            Err(_) => {
                errors.push(err(line, MapErrorKind::BadCount(third.to_owned())));
                None
            }
        };
        let (Some(first), Some(host), Some(count)) = (node, host, count) else {
            continue;
        };
        let last = u64::from(first.get()) + count - 1;
        if last > u64::from(NodeId::MAX) {
            errors.push(err(
                line,
                MapErrorKind::RangePastMax {
                    first: first.get(),
                    last,
                },
            ));
            continue;
        }
        // The check above bounds count by 65535.
        let count = u16::try_from(count).unwrap_or(u16::MAX);
        out.push(MapLine::Range {
            line,
            first,
            host,
            count,
        });
    }
    if errors.is_empty() && out.is_empty() {
        errors.push(MapError {
            file: file.to_owned(),
            line: None,
            kind: MapErrorKind::Empty,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(MapErrors(errors))
    }
}

fn parse_node(s: &str) -> Result<NodeId, MapErrorKind> {
    let n: u64 = s.parse().map_err(|_| MapErrorKind::BadNode(s.to_owned()))?;
    u16::try_from(n)
        .ok()
        .and_then(NodeId::new)
        .ok_or(MapErrorKind::NodeRange(n))
}

fn parse_host(s: &str) -> Result<Host, MapErrorKind> {
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => return Ok(Host::Addr(a)),
        Ok(IpAddr::V6(_)) => return Err(MapErrorKind::Ipv6(s.to_owned())),
        Err(_) => {}
    }
    if s.contains(':') {
        return Err(MapErrorKind::Ipv6(s.to_owned()));
    }
    // Something that looks like a dotted quad but did not parse is a typo, not a name.
    let dotted_digits = s.chars().all(|c| c.is_ascii_digit() || c == '.');
    let name_ok = !dotted_digits
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if name_ok {
        Ok(Host::Name(s.to_owned()))
    } else {
        Err(MapErrorKind::BadHost(s.to_owned()))
    }
}

/// A range of consecutive nodes at consecutive addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRange {
    /// The line it came from.
    pub line: usize,
    /// The first node.
    pub first: NodeId,
    /// How many nodes.
    pub count: u16,
    /// The address of the first node.
    pub addr: Ipv4Addr,
    /// The host column as written (an address or a name).
    pub host: Host,
}

impl NodeRange {
    /// The last node of the range.
    pub fn last(&self) -> NodeId {
        // parse() guarantees first + count - 1 <= 65535 and count >= 1.
        NodeId::new(self.first.get() + (self.count - 1)).unwrap_or(self.first)
    }

    fn contains(&self, n: NodeId) -> bool {
        n >= self.first && n <= self.last()
    }

    fn addr_of(&self, n: NodeId) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + u32::from(n.get() - self.first.get()))
    }

    fn node_of(&self, a: Ipv4Addr) -> Option<NodeId> {
        let off = u32::from(a).checked_sub(u32::from(self.addr))?;
        if off < u32::from(self.count) {
            // off < count <= 65535 - first + 1, so the sum fits.
            NodeId::new(self.first.get() + u16::try_from(off).ok()?)
        } else {
            None
        }
    }
}

/// Another address of a node (a gateway with several interfaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAlias {
    /// The line it came from.
    pub line: usize,
    /// The node.
    pub node: NodeId,
    /// Its other address.
    pub addr: Ipv4Addr,
    /// The host column as written.
    pub host: Host,
}

/// A checked, resolved cluster map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMap {
    ranges: Vec<NodeRange>,
    aliases: Vec<NodeAlias>,
}

/// Resolves map entries with `resolver` (a host name to its IPv4 address) and checks the rules
/// that need addresses: overlapping ranges, one address for two nodes, aliases of unknown nodes.
pub fn resolve(
    file: &str,
    lines: &[MapLine],
    resolver: &dyn Fn(&str) -> Result<Ipv4Addr, String>,
) -> Result<ClusterMap, MapErrors> {
    let mut errors = Vec::new();
    let err = |line: usize, kind| MapError {
        file: file.to_owned(),
        line: Some(line),
        kind,
    };
    let mut lookup = |line: usize, host: &Host| -> Option<Ipv4Addr> {
        match host {
            Host::Addr(a) => Some(*a),
            Host::Name(n) => match resolver(n) {
                Ok(a) => Some(a),
                Err(reason) => {
                    errors.push(err(
                        line,
                        MapErrorKind::Resolve {
                            host: n.clone(),
                            reason,
                        },
                    ));
                    None
                }
            },
        }
    };
    let mut ranges = Vec::new();
    let mut aliases = Vec::new();
    for l in lines {
        match l {
            MapLine::Range {
                line,
                first,
                host,
                count,
            } => {
                let Some(addr) = lookup(*line, host) else {
                    continue;
                };
                ranges.push(NodeRange {
                    line: *line,
                    first: *first,
                    count: *count,
                    addr,
                    host: host.clone(),
                });
            }
            MapLine::Alias { line, node, host } => {
                let Some(addr) = lookup(*line, host) else {
                    continue;
                };
                aliases.push(NodeAlias {
                    line: *line,
                    node: *node,
                    addr,
                    host: host.clone(),
                });
            }
        }
    }

    // Address space overflow.
    ranges.retain(|r| {
        let fits = u32::from(r.addr)
            .checked_add(u32::from(r.count) - 1)
            .is_some();
        if !fits {
            errors.push(err(
                r.line,
                MapErrorKind::AddressPastMax {
                    start: r.addr,
                    count: r.count,
                },
            ));
        }
        fits
    });

    // Overlapping node ranges: report each later line against the earliest it overlaps.
    for (i, r) in ranges.iter().enumerate() {
        if let Some(o) = ranges[..i]
            .iter()
            .find(|o| r.first <= o.last() && o.first <= r.last())
        {
            errors.push(err(
                r.line,
                MapErrorKind::Overlap {
                    first: r.first.get(),
                    last: r.last().get(),
                    other_first: o.first.get(),
                    other_last: o.last().get(),
                    other_line: o.line,
                },
            ));
        }
    }

    // One address, two nodes: address intervals of ranges must not intersect.
    for (i, r) in ranges.iter().enumerate() {
        let (a0, a1) = addr_interval(r);
        if let Some(o) = ranges[..i].iter().find(|o| {
            let (b0, b1) = addr_interval(o);
            a0 <= b1 && b0 <= a1
        }) {
            let addr = Ipv4Addr::from(a0.max(addr_interval(o).0));
            errors.push(err(
                r.line,
                MapErrorKind::DuplicateAddress {
                    addr,
                    node: r.node_of(addr).map_or(0, NodeId::get),
                    other_node: o.node_of(addr).map_or(0, NodeId::get),
                    other_line: o.line,
                },
            ));
        }
    }

    for (i, a) in aliases.iter().enumerate() {
        if !ranges.iter().any(|r| r.contains(a.node)) {
            errors.push(err(a.line, MapErrorKind::AliasUnknown(a.node.get())));
            continue;
        }
        let clash_range = ranges
            .iter()
            .find_map(|r| r.node_of(a.addr).map(|n| (n, r.line)));
        let clash_alias = aliases[..i]
            .iter()
            .find(|o| o.addr == a.addr)
            .map(|o| (o.node, o.line));
        if let Some((other, other_line)) = clash_range.or(clash_alias)
            && other != a.node
        {
            errors.push(err(
                a.line,
                MapErrorKind::DuplicateAddress {
                    addr: a.addr,
                    node: a.node.get(),
                    other_node: other.get(),
                    other_line,
                },
            ));
        }
    }

    if errors.is_empty() {
        errors.sort_by_key(|e| e.line);
        Ok(ClusterMap { ranges, aliases })
    } else {
        errors.sort_by_key(|e| e.line);
        Err(MapErrors(errors))
    }
}

fn addr_interval(r: &NodeRange) -> (u32, u32) {
    let a = u32::from(r.addr);
    (a, a + (u32::from(r.count) - 1))
}

/// Parses and resolves a map in one go.
pub fn parse_and_resolve(
    file: &str,
    text: &str,
    resolver: &dyn Fn(&str) -> Result<Ipv4Addr, String>,
) -> Result<ClusterMap, MapErrors> {
    let lines = parse(file, text)?;
    resolve(file, &lines, resolver)
}

/// Resolves a host name with the system resolver (`/etc/hosts`, DNS), taking its first IPv4
/// address.
pub fn system_resolver(name: &str) -> Result<Ipv4Addr, String> {
    use std::net::ToSocketAddrs;
    let addrs = (name, 0u16).to_socket_addrs().map_err(|e| e.to_string())?;
    addrs
        .filter_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| "it has no IPv4 address".to_owned())
}

/// Reads a map file (or standard input for "-"), bounded by [`MAX_MAP_BYTES`].
pub fn read_map_text(path: &str) -> Result<String, MapErrors> {
    use std::io::Read;
    let fail = |kind| {
        MapErrors(vec![MapError {
            file: path.to_owned(),
            line: None,
            kind,
        }])
    };
    let mut buf = Vec::new();
    let res = if path == "-" {
        std::io::stdin()
            .lock()
            .take(MAX_MAP_BYTES + 1)
            .read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_MAP_BYTES + 1).read_to_end(&mut buf))
    };
    res.map_err(|e| fail(MapErrorKind::Read(e.to_string())))?;
    if buf.len() as u64 > MAX_MAP_BYTES {
        return Err(fail(MapErrorKind::TooLarge));
    }
    String::from_utf8(buf)
        .map_err(|_| fail(MapErrorKind::Read("the file is not UTF-8 text".into())))
}

/// How this node knows which node of the map it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// `-p N` named a node the map does not have.
    #[error("node {0} (given with -p) is not in the map")]
    NotInMap(NodeId),
    /// None of this machine's addresses is in the map.
    #[error(
        "this node's address is not in the map (this machine has {0}); use -p NODE to name the node"
    )]
    NoAddress(String),
    /// Several of this machine's addresses are different nodes.
    #[error("several addresses of this machine are in the map (nodes {0}); use -p NODE to choose")]
    Ambiguous(String),
}

impl ClusterMap {
    /// The ranges, in file order.
    pub fn ranges(&self) -> &[NodeRange] {
        &self.ranges
    }

    /// The aliases, in file order.
    pub fn aliases(&self) -> &[NodeAlias] {
        &self.aliases
    }

    /// The number of nodes the map defines.
    pub fn node_count(&self) -> usize {
        self.ranges.iter().map(|r| usize::from(r.count)).sum()
    }

    /// Every node of the map, in increasing order.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .ranges
            .iter()
            .flat_map(|r| (r.first.get()..=r.last().get()).filter_map(NodeId::new))
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether the map defines this node.
    pub fn contains(&self, n: NodeId) -> bool {
        self.ranges.iter().any(|r| r.contains(n))
    }

    /// The (main) address of a node.
    pub fn addr_of(&self, n: NodeId) -> Option<Ipv4Addr> {
        self.ranges
            .iter()
            .find(|r| r.contains(n))
            .map(|r| r.addr_of(n))
    }

    /// The node an address belongs to, through a range or an alias.
    pub fn node_of(&self, a: Ipv4Addr) -> Option<NodeId> {
        self.ranges
            .iter()
            .find_map(|r| r.node_of(a))
            .or_else(|| self.aliases.iter().find(|x| x.addr == a).map(|x| x.node))
    }

    /// Every address of a node: its main address and its aliases.
    pub fn addrs_of(&self, n: NodeId) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self.addr_of(n).into_iter().collect();
        v.extend(self.aliases.iter().filter(|a| a.node == n).map(|a| a.addr));
        v
    }

    /// Works out which node this machine is: the node named by `forced` (`-p`), or the one node
    /// whose address is one of `local` (this machine's interface addresses).
    pub fn identify(
        &self,
        local: &[Ipv4Addr],
        forced: Option<NodeId>,
    ) -> Result<NodeId, IdentityError> {
        if let Some(n) = forced {
            return if self.contains(n) {
                Ok(n)
            } else {
                Err(IdentityError::NotInMap(n))
            };
        }
        let mut found: BTreeMap<NodeId, ()> = BTreeMap::new();
        for a in local {
            if let Some(n) = self.node_of(*a) {
                found.insert(n, ());
            }
        }
        let found: Vec<NodeId> = found.into_keys().collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(IdentityError::NoAddress(if local.is_empty() {
                "no IPv4 address".to_owned()
            } else {
                local
                    .iter()
                    .map(Ipv4Addr::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })),
            many => Err(IdentityError::Ambiguous(
                many.iter()
                    .map(NodeId::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    /// Writes the map in mosix.map(5) format, addresses resolved, one entry per line.
    pub fn to_text(&self) -> String {
        let mut s = String::from("# first-node  address  count\n");
        for r in &self.ranges {
            s.push_str(&format!("{:<6} {:<15} {}", r.first, r.addr, r.count));
            if let Host::Name(n) = &r.host {
                s.push_str(&format!("   # {n}"));
            }
            s.push('\n');
        }
        for a in &self.aliases {
            s.push_str(&format!("{:<6} {:<15} ALIAS", a.node, a.addr));
            if let Host::Name(n) = &a.host {
                s.push_str(&format!("   # {n}"));
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_dns(name: &str) -> Result<Ipv4Addr, String> {
        match name {
            "node20.lan" => Ok(Ipv4Addr::new(10, 0, 0, 20)),
            _ => Err("unknown host".into()),
        }
    }

    fn map(text: &str) -> Result<ClusterMap, MapErrors> {
        parse_and_resolve("m", text, &no_dns)
    }

    fn one_error(text: &str) -> MapError {
        let e = map(text).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        e.0[0].clone()
    }

    #[test]
    fn the_interface_example_parses() {
        let m = map("# c\n1 10.0.0.1 8 # eight\n\n20 node20.lan 1\n5 192.168.1.1 ALIAS\n").unwrap();
        assert_eq!(m.node_count(), 9);
        let n = |x| NodeId::new(x).unwrap();
        assert_eq!(m.addr_of(n(8)), Some(Ipv4Addr::new(10, 0, 0, 8)));
        assert_eq!(m.addr_of(n(9)), None);
        assert_eq!(m.node_of(Ipv4Addr::new(192, 168, 1, 1)), Some(n(5)));
        assert_eq!(m.node_of(Ipv4Addr::new(10, 0, 0, 20)), Some(n(20)));
        assert_eq!(m.addrs_of(n(5)).len(), 2);
    }

    #[test]
    fn writer_output_reads_back_identically() {
        let m = map("1 10.0.0.1 8\n20 node20.lan 1\n5 192.168.1.1 alias\n").unwrap();
        let again = parse_and_resolve("w", &m.to_text(), &no_dns).unwrap();
        assert_eq!(m.nodes(), again.nodes());
        for n in m.nodes() {
            assert_eq!(m.addrs_of(n), again.addrs_of(n));
        }
    }

    #[test]
    fn each_problem_names_its_line() {
        let e = one_error("1 10.0.0.1 2\n\n3 10.0.0.3\n");
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().starts_with("m:3: malformed line"), "{e}");
        assert_eq!(one_error("0 10.0.0.1 1").kind, MapErrorKind::NodeRange(0));
        assert_eq!(
            one_error("70000 10.0.0.1 1").kind,
            MapErrorKind::NodeRange(70000)
        );
        assert!(matches!(
            one_error("65530 10.0.0.1 10").kind,
            MapErrorKind::RangePastMax { .. }
        ));
        assert!(matches!(
            one_error("1 255.255.255.250 10").kind,
            MapErrorKind::AddressPastMax { .. }
        ));
        assert_eq!(one_error("1 10.0.0.1 0").kind, MapErrorKind::ZeroCount);
        assert!(matches!(
            one_error("1 10.0.0.1 2\n2 10.0.1.1 2").kind,
            MapErrorKind::Overlap { other_line: 1, .. }
        ));
        assert!(matches!(
            one_error("1 10.0.0.1 4\n10 10.0.0.3 1").kind,
            MapErrorKind::DuplicateAddress {
                node: 10,
                other_node: 3,
                ..
            }
        ));
        assert_eq!(
            one_error("1 10.0.0.1 4\n9 10.0.1.1 ALIAS").kind,
            MapErrorKind::AliasUnknown(9)
        );
        assert!(matches!(
            one_error("1 10.0.0.1 4\n2 10.0.0.3 ALIAS").kind,
            MapErrorKind::DuplicateAddress { .. }
        ));
        assert!(matches!(
            one_error("1 nosuch.host 1").kind,
            MapErrorKind::Resolve { .. }
        ));
        assert!(matches!(one_error("1 ::1 1").kind, MapErrorKind::Ipv6(_)));
        assert!(matches!(
            one_error("1 10.0.0.300 1").kind,
            MapErrorKind::BadHost(_)
        ));
        assert_eq!(one_error("# nothing\n").kind, MapErrorKind::Empty);
    }

    #[test]
    fn more_than_256_entries_is_refused_at_the_257th() {
        let text: String = (1..=257)
            .map(|i| format!("{i} 10.1.{}.{} 1\n", i / 200, i % 200 + 1))
            .collect();
        let e = one_error(&text);
        assert_eq!(e.kind, MapErrorKind::TooManyEntries);
        assert_eq!(e.line, Some(257));
        let ok: String = (1..=256)
            .map(|i| format!("{i} 10.1.{}.{} 1\n", i / 200, i % 200 + 1))
            .collect();
        assert!(map(&ok).is_ok());
    }

    #[test]
    fn all_errors_are_reported_together() {
        let e = map("x 10.0.0.1 1\n2 10.0.0.2 y\n").unwrap_err();
        assert_eq!(e.0.len(), 2);
        assert_eq!(e.to_string().lines().count(), 2);
    }

    #[test]
    fn identity_by_address_or_by_force() {
        let m = map("1 10.0.0.1 4\n").unwrap();
        let n = |x| NodeId::new(x).unwrap();
        assert_eq!(
            m.identify(&[Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 0, 3)], None),
            Ok(n(3))
        );
        assert!(matches!(
            m.identify(&[Ipv4Addr::LOCALHOST], None),
            Err(IdentityError::NoAddress(_))
        ));
        assert!(matches!(
            m.identify(
                &[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
                None
            ),
            Err(IdentityError::Ambiguous(_))
        ));
        assert_eq!(m.identify(&[], Some(n(2))), Ok(n(2)));
        assert_eq!(
            m.identify(&[], Some(n(9))),
            Err(IdentityError::NotInMap(n(9)))
        );
    }
}
