//! The partners(5) manual page, rendered with `roff` from the text below and checked in as
//! `man/partners.5` (the setpe tests regenerate it and fail when the copy is stale).

use roff::{Roff, bold, italic, roman};

/// Renders the page.
pub(crate) fn page() -> String {
    let mut r = Roff::new();
    r.control(
        "TH",
        [
            "PARTNERS",
            "5",
            "",
            &format!("mosix-rs {}", mosix_core::VERSION),
        ],
    );
    r.control("SH", ["NAME"]);
    r.text([roman(
        "partners - the partner clusters of a MOSIX cluster: a grid of clusters",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        roman("$MOSIX_ETC/mosix/partners (default "),
        bold("/etc/mosix/partners"),
        roman("); no file: a cluster on its own"),
    ]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(
        "A cluster is its map (mosix.map(5)). A cluster may share its nodes with partner \
         clusters owned by others: their processes run on its nodes as guests when it has room, \
         and its processes on theirs. Each line names one partner:",
    )]);
    r.control("TP", []);
    r.text([
        italic("name"),
        roman(" "),
        italic("priority"),
        roman(" "),
        italic("map"),
        roman(" "),
        italic("secret"),
        roman(" ["),
        bold("nogo"),
        roman("] ["),
        bold("notake"),
        roman("] ["),
        bold("idle"),
        roman("]"),
    ]);
    r.text([roman(
        "name: 1 to 32 letters, digits, '-', '_' or '.', as mon(1) and mosctl status show it. \
         priority: 1..65534, lower is better; this cluster's own processes are 0 and come first \
         on its nodes. map: the partner's map, in mosix.map(5) format. secret: the file of this \
         partnership's own secret (at least 16 bytes, mode 0600, owned by the user that runs the \
         service; the partner keeps the same secret). Relative paths are read from the folder \
         of the partners file.",
    )]);
    r.control("PP", []);
    r.text([roman(
        "Options: nogo: this cluster's processes do not go to the partner's nodes. notake: \
         this cluster takes none of its processes. idle: its processes run here only while no \
         process of this cluster wants a CPU, and leave as soon as one does.",
    )]);
    r.control("SH", ["NODE NUMBERS"]);
    r.text([roman(
        "Node numbers are grid-wide: every cluster uses its own range of numbers (the first \
         column of the map), so a number says which cluster a node is in. The owners agree on \
         the ranges; setpe -c refuses a partner whose nodes or addresses are also in this \
         cluster's map or in another partner's.",
    )]);
    r.control("SH", ["PRIORITIES"]);
    r.text([roman(
        "A node gives its CPUs to the best priorities first. When a process of a better \
         priority wants a CPU that guests of a worse one hold, those guests are sent home \
         (worst priority first), within a second or two; their home moves them on to a node of \
         their own cluster with room or, having none, freezes them (migrate(1) freeze) and \
         brings them back one at a time when there is room again ([freeze] marks in \
         mosix.toml). Guests of equal priorities share. A node refuses a partner's process that \
         it would have to send home at once. Nobody's process is killed.",
    )]);
    r.control("SH", ["WHAT CROSSES"]);
    r.text([roman(
        "Every node gossips as within its cluster, but one message in [grid] every (default 5) \
         goes to a node of a partner: what a node sends stays one message per interval however \
         large the grid. Information about a partner's node is a few intervals older than about \
         one's own, and counts as down only after several crossings have been missed. A \
         connection between two clusters is authenticated and sealed as within a cluster, with \
         the partnership's secret; the link accepts a partner's node only from its map's \
         addresses.",
    )]);
    r.control("SH", ["CLOSING"]);
    r.text([roman(
        "mosctl closegrid closes a node to the grid: it takes no process of another cluster and \
         sends none there, and every guest of another cluster leaves before the command \
         returns (or it says how many are left after a minute). mosctl opengrid opens it \
         again, mosctl opengrid N for at most N guests of other clusters at once ([grid] \
         max_guests); [grid] closed = true in mosix.toml starts it closed. mosctl cngpri \
         PARTNER PRI changes a partner's priority on this node until the file is read again. \
         mosctl isolate closes every node of the cluster (they hear of it by gossip, from the \
         cluster's own nodes only) and follows them until none runs a guest of another \
         cluster; mosctl rejoin opens them again.",
    )]);
    r.control("SH", ["ERRORS"]);
    r.text([roman(
        "setpe -c checks the partners file with the map and reports every problem with the file \
         and the line, for example /etc/mosix/partners:3: nodes 2..2 of partner 'c' overlap \
         nodes 1..2 of this cluster. A line is refused for: fewer than four columns; a bad \
         name or a name given twice; a priority outside 1..65534; an unknown option; a map that \
         is wrong (its own errors follow, with its file and line); a secret that is missing, \
         too short, or readable by others; node numbers or addresses shared with another \
         cluster. At most 64 partners.",
    )]);
    r.control("SH", ["EXAMPLE"]);
    r.control("nf", []);
    r.text([roman(
        "# name    priority  map                 secret\n\
         physics   10        physics.map         physics.secret\n\
         chem      50        /srv/chem/mosix.map chem.secret     notake idle",
    )]);
    r.control("fi", []);
    r.control("SH", ["FILES"]);
    r.text([roman(
        "/etc/mosix/partners; the maps and secrets it names; [grid] name and every in \
         /etc/mosix/mosix.toml. MOSIX_ETC replaces /etc.",
    )]);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman(
        "mosix.map(5), setpe(1), mosctl(1), mon(1), migrate(1)",
    )]);
    r.render()
}
