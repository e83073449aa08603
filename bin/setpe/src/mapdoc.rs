//! The mosix.map(5) manual page, rendered with `roff` from the text below and checked in as
//! `man/mosix.map.5` (the setpe tests regenerate it and fail when the copy is stale).

use roff::{Roff, bold, italic, roman};

/// Renders the page.
pub(crate) fn page() -> String {
    let mut r = Roff::new();
    r.control(
        "TH",
        [
            "MOSIX.MAP",
            "5",
            "",
            &format!("mosix-rs {}", mosix_core::VERSION),
        ],
    );
    r.control("SH", ["NAME"]);
    r.text([roman(
        "mosix.map - the MOSIX cluster map: node numbers and addresses",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        roman("$MOSIX_ETC/mosix.map (default "),
        bold("/etc/mosix.map"),
        roman(")"),
    ]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(
        "The map gives every node of a MOSIX cluster its number (1 to 65535) and its IPv4 \
         address. Every node reads the same map with setpe(1). A line is either a range or an alias:",
    )]);
    r.control("TP", []);
    r.text([
        italic("first-node"),
        roman(" "),
        italic("address-or-hostname"),
        roman(" "),
        italic("count"),
    ]);
    r.text([roman(
        "Nodes first-node .. first-node+count-1 have the consecutive IPv4 addresses that start \
         at the given address. A host name is resolved through the system resolver (/etc/hosts, DNS).",
    )]);
    r.control("TP", []);
    r.text([
        italic("node"),
        roman(" "),
        italic("address-or-hostname"),
        roman(" "),
        bold("ALIAS"),
    ]);
    r.text([roman(
        "The node is also known by this address (a gateway with several interfaces). Connections \
         from an alias address are accepted as coming from the node.",
    )]);
    r.control("PP", []);
    r.text([roman(
        "Columns are separated by blanks (spaces or tabs). A '#' starts a comment that runs to the \
         end of the line; blank lines are ignored. A map has at most 256 entry lines.",
    )]);
    r.control("SH", ["THIS NODE"]);
    r.text([roman(
        "A node finds itself in the map by its own addresses: the one node whose address belongs \
         to an interface of the machine (in its network namespace). When none or several do, \
         setpe -p NODE names the node.",
    )]);
    r.control("SH", ["ERRORS"]);
    r.text([roman(
        "setpe -c checks a map and reports every problem with the file name and the line, for \
         example /etc/mosix.map:3: nodes 4..7 overlap nodes 1..4 of line 2. A map is refused for:",
    )]);
    for item in [
        "a malformed line (not three columns);",
        "a node number that is not a number or is outside 1..65535;",
        "a count that is not a number (nor ALIAS), or is 0;",
        "a range that runs past node 65535, or past address 255.255.255.255;",
        "an address that is not IPv4 (IPv6 is not supported) or a host name that does not resolve;",
        "node ranges that overlap;",
        "an address given to two nodes (by two ranges, or by an alias);",
        "an ALIAS for a node that no range defines;",
        "more than 256 entries;",
        "no entries at all.",
    ] {
        r.control("IP", ["\\(bu", "2"]);
        r.text([roman(item)]);
    }
    r.control("PP", []);
    r.text([roman(
        "setpe -w also refuses a map in which this node's address does not appear, unless -p names the node.",
    )]);
    r.control("SH", ["EXAMPLE"]);
    r.control("nf", []);
    r.text([roman(
        "# first-node  address-or-hostname  count\n\
         1   10.0.0.1   8        # nodes 1..8 are 10.0.0.1 .. 10.0.0.8\n\
         20  node20.lan 1\n\
         5   192.168.1.1 ALIAS   # node 5 is also known by this address",
    )]);
    r.control("fi", []);
    r.control("SH", ["FILES"]);
    r.text([roman(
        "/etc/mosix.map; /etc/mosix/secret (the cluster secret, the same on every node, mode 0600); \
         /etc/mosix/mosix.toml (optional tunables). MOSIX_ETC replaces /etc.",
    )]);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman("setpe(1), mosctl(1), mon(1)")]);
    r.render()
}
