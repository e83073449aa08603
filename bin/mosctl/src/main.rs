//! mosctl: administer a MOSIX node and query the cluster.
//!
//! Every verb is one or two requests to the local node service; this file only turns the
//! answers into words, numbers or JSON.

mod cli;

use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use mosix_core::cli::RunningNodes;
use mosix_core::client::{Client, ClientError, ClusterView, Moved, NodeView};
use mosix_core::config::{DecayTunables, Paths};
use mosix_core::{Flag, NodeId, Status};
use serde::Serialize;

use cli::{Cli, NodeQuery, Verb};

const ENETUNREACH: i64 = 101;
const ENODATA: i64 = 61;
const EINVAL: i64 = 22;

fn main() -> ExitCode {
    let cli = Cli::parse_from(cli::classic_args(std::env::args_os()));
    match run(cli.verb) {
        Ok(code) => code,
        Err(e) => mosix_core::cli::report("mosctl", e.as_ref()),
    }
}

fn client() -> Result<Client> {
    Ok(Client::connect(&Paths::from_env())?)
}

fn set_flag(flag: Flag, on: bool) -> Result<ExitCode> {
    client()?.set_flag(flag, on)?;
    Ok(ExitCode::SUCCESS)
}

fn run(verb: Verb) -> Result<ExitCode> {
    match verb {
        Verb::Stay => set_flag(Flag::Stay, true),
        Verb::Nostay => set_flag(Flag::Stay, false),
        Verb::Lstay => set_flag(Flag::Lstay, true),
        Verb::Nolstay => set_flag(Flag::Lstay, false),
        Verb::Block => set_flag(Flag::Block, true),
        Verb::Noblock => set_flag(Flag::Block, false),
        Verb::Expel(w) => move_all(true, w.json, w.timeout),
        Verb::Bring(w) => move_all(false, w.json, w.timeout),
        Verb::Closegrid(j) => closegrid(j.json),
        Verb::Isolate(j) => isolate(j.json),
        Verb::Rejoin => {
            client()?.isolate(false)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Opengrid { maxguests } => {
            client()?.open_grid(maxguests)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Cngpri { pairs } => cngpri(&pairs),
        Verb::Quiet => set_flag(Flag::Quiet, true),
        Verb::Noquiet => set_flag(Flag::Quiet, false),
        Verb::Mfs => set_flag(Flag::NoMfs, false),
        Verb::Nomfs => set_flag(Flag::NoMfs, true),
        Verb::Status(q) => status(&q),
        Verb::Isup(q) => isup(&q.node, q.json),
        Verb::Whois(w) => whois(w.what.as_deref(), w.json),
        Verb::Getload(q) => get(&q, "load", |f| i64::from(f.load)),
        Verb::Getspeed(q) => get(&q, "speed", |f| i64::from(f.speed)),
        Verb::Getmem(q) => get(&q, "mem", |f| i64::try_from(f.mem_free).unwrap_or(i64::MAX)),
        Verb::Getfree(q) => get(&q, "free", |f| {
            i64::try_from(f.mem_rawfree).unwrap_or(i64::MAX)
        }),
        Verb::Getutil(q) => get(&q, "util", |f| i64::from(f.util)),
        Verb::Getcpus(q) => get(&q, "cpus", |f| i64::from(f.cpus)),
        Verb::Setspeed { speed } => {
            client()?.set_speed(speed)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Getdecay(j) => getdecay(j.json),
        Verb::Setdecay {
            interval,
            slow,
            fast,
        } => {
            if slow.is_some() != fast.is_some() {
                return mosix_core::usage!("give both SLOW and FAST, or neither");
            }
            let mut c = client()?;
            let cur = c.decay()?;
            let d = DecayTunables {
                interval_s: interval,
                slow: slow.unwrap_or(cur.slow),
                fast: fast.unwrap_or(cur.fast),
            };
            d.validate().map_err(|e| anyhow!(e))?;
            c.set_decay(d)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Gettune(t) if t.files => getfiletune(t.json),
        Verb::Gettune(t) => gettune(t.json),
    }
}

/// `expel` (or else `bring`): the service asks every process to move and answers when it is
/// done.
fn move_all(expel: bool, json: bool, timeout: u64) -> Result<ExitCode> {
    let mut c = client()?;
    // The service answers within a minute and some.
    c.set_timeout((timeout > 0).then(|| std::time::Duration::from_secs(timeout)));
    let status = move || {
        let rows = client().ok()?.procs(expel).ok()?;
        let n = rows
            .iter()
            .filter(|r| if expel { r.from.is_some() } else { r.node != 0 })
            .count();
        Some(if expel {
            format!("{n} guest{} still here", if n == 1 { "" } else { "s" })
        } else {
            format!("{n} process{} still away", if n == 1 { "" } else { "es" })
        })
    };
    let what = if expel {
        "sending guests home"
    } else {
        "bringing processes home"
    };
    let moved =
        mosix_core::cli::with_progress(what, status, || if expel { c.expel() } else { c.bring() })?;
    let Moved { asked, left } = moved;
    if json {
        print_json(&moved)?;
    } else {
        let (one, many, whither) = if expel {
            ("guest", "guests", "sent home; arrivals blocked")
        } else {
            ("process", "processes", "brought home; lstay set")
        };
        let who = if asked == 1 { one } else { many };
        match left {
            0 => println!("{asked} {who} {whither}"),
            n => println!("{asked} {who} asked to move, {n} still not moved after a minute"),
        }
    }
    Ok(if left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `closegrid`: the service closes the node and asks the guests of other clusters to leave;
/// this follows them until none is left, saying how many still are.
fn closegrid(json: bool) -> Result<ExitCode> {
    use std::time::{Duration, Instant};
    let mut c = client()?;
    let Moved { asked, .. } = c.close_grid()?;
    if !json {
        println!(
            "closed to the grid; {asked} guest{} of other clusters asked to leave",
            if asked == 1 { "" } else { "s" }
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shown = None;
    let left = loop {
        let left: u32 = c.view()?.partners.iter().map(|p| p.guests_here).sum();
        if left == 0 || Instant::now() >= deadline {
            break left;
        }
        if !json && shown != Some(left) {
            println!("  {left} still here");
            shown = Some(left);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if json {
        print_json(&Moved { asked, left })?;
    } else if left == 0 {
        println!("no guest of another cluster is left here");
    } else {
        println!("{left} guests of other clusters still here after a minute");
    }
    Ok(if left == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cngpri PARTNER PRI [PARTNER PRI]...`: every pair checked before any is sent.
fn cngpri(pairs: &[String]) -> Result<ExitCode> {
    if !pairs.len().is_multiple_of(2) {
        return mosix_core::usage!(
            "give pairs of a partner and a priority (cngpri PARTNER PRI [PARTNER PRI]...)"
        );
    }
    let mut todo = Vec::new();
    for p in pairs.chunks(2) {
        let pri: u16 = p[1]
            .parse()
            .ok()
            .filter(|v| (1..=65534).contains(v))
            .with_context(|| format!("priority '{}' for {}: expected 1..65534", p[1], p[0]))?;
        todo.push((p[0].as_str(), pri));
    }
    let mut c = client()?;
    for (name, pri) in todo {
        c.set_priority(name, pri)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `isolate`: the service closes this node and gossips the isolation; this follows every node of
/// the cluster until each is closed and runs no guest of another cluster.
fn isolate(json: bool) -> Result<ExitCode> {
    use std::time::{Duration, Instant};
    let mut c = client()?;
    let Moved { asked, .. } = c.isolate(true)?;
    if !json {
        println!(
            "cluster isolated from the grid; this node asked {asked} guest{} of other clusters to leave",
            if asked == 1 { "" } else { "s" }
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shown = String::new();
    let pending = loop {
        let v = c.view()?;
        let pending: Vec<String> = v
            .nodes
            .iter()
            .filter(|n| n.cluster.is_none() && n.up)
            .filter_map(|n| {
                let closed = n.status.contains(Status::CLOSED);
                let guests = n.figures.map_or(0, |f| f.foreign_guests);
                match (closed, guests) {
                    (true, 0) => None,
                    (false, _) => Some(format!("node {} not closed yet", n.node)),
                    (true, g) => Some(format!("node {} runs {g} guests of other clusters", n.node)),
                }
            })
            .collect();
        if pending.is_empty() || Instant::now() >= deadline {
            break pending;
        }
        let line = pending.join("; ");
        if !json && line != shown {
            println!("  {line}");
            shown = line;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if json {
        print_json(&serde_json::json!({ "asked": asked, "pending": pending }))?;
    } else if pending.is_empty() {
        println!("every node of the cluster is closed and runs no guest of another cluster");
    } else {
        println!("after a minute: {}", pending.join("; "));
    }
    Ok(if pending.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The running map and the view, for queries that name nodes.
struct Known {
    nodes: RunningNodes,
    view: ClusterView,
}

fn known() -> Result<Known> {
    let mut c = client()?;
    let nodes = RunningNodes::new(&c.config()?)?;
    let view = c.view()?;
    Ok(Known { nodes, view })
}

impl Known {
    fn node(&self, arg: Option<&str>) -> Result<&NodeView> {
        let n = match arg {
            None => self.view.me,
            Some(a) => self.nodes.node(a)?,
        };
        self.view
            .get(n)
            .ok_or_else(|| anyhow!("node {n} is not in the running map"))
    }
}

#[derive(Serialize)]
struct StatusJson {
    node: NodeId,
    addr: Ipv4Addr,
    up: bool,
    stay: bool,
    lstay: bool,
    block: bool,
    quiet: bool,
    nomfs: bool,
    closed: bool,
    /// The partner cluster the node is of (`null`: this node's cluster).
    cluster: Option<String>,
    status: u32,
    age_ms: Option<u64>,
    is_self: bool,
    /// This node's MFS and DFSA counters (only for this node).
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<mosix_core::client::FileCounters>,
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn status(q: &NodeQuery) -> Result<ExitCode> {
    let k = known()?;
    let v = k.node(q.node.as_deref())?;
    let s = v.status;
    if q.json {
        print_json(&StatusJson {
            node: v.node,
            addr: v.addr,
            up: v.up,
            stay: s.contains(Status::STAY),
            lstay: s.contains(Status::LSTAY),
            block: s.contains(Status::BLOCK),
            quiet: s.contains(Status::QUIET),
            nomfs: s.contains(Status::NOMFS),
            closed: s.contains(Status::CLOSED),
            cluster: v.cluster.clone().or_else(|| Some(k.view.cluster.clone())),
            status: s.bits(),
            age_ms: v.age_ms,
            is_self: v.is_self,
            files: v.is_self.then_some(k.view.files),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let state = if v.is_self {
        "up (this node)".to_owned()
    } else if v.up {
        format!("up (last heard {})", age(v.age_ms))
    } else {
        match v.age_ms {
            Some(_) => format!("down (last heard {})", age(v.age_ms)),
            None => "down (never heard of)".to_owned(),
        }
    };
    let known_flags = v.is_self || v.age_ms.is_some();
    let flag = |bit: Status, on: &str, off: &str| {
        if !known_flags {
            "unknown".to_owned()
        } else if s.contains(bit) {
            format!("yes ({on})")
        } else {
            format!("no ({off})")
        }
    };
    let cluster = v.cluster.as_deref().unwrap_or(&k.view.cluster);
    println!(
        "MOSIX node #{} ({}) of cluster {cluster}: {state}",
        v.node, v.addr
    );
    println!(
        "  stay:  {}",
        flag(
            Status::STAY,
            "no automatic migration away",
            "automatic migration allowed"
        )
    );
    println!(
        "  lstay: {}",
        flag(
            Status::LSTAY,
            "its own processes stay",
            "its own processes may leave"
        )
    );
    println!(
        "  block: {}",
        flag(Status::BLOCK, "guests may not arrive", "guests may arrive")
    );
    println!(
        "  quiet: {}",
        flag(
            Status::QUIET,
            "does not disseminate its load",
            "disseminates its load"
        )
    );
    println!(
        "  mfs:   {}",
        if !known_flags {
            "unknown".to_owned()
        } else if s.contains(Status::NOMFS) {
            "disabled (nomfs)".to_owned()
        } else {
            "enabled".to_owned()
        }
    );
    println!(
        "  grid:  {}",
        if !known_flags {
            "unknown".to_owned()
        } else if s.contains(Status::CLOSED) {
            "closed (closegrid): takes no process of another cluster, sends none there".to_owned()
        } else if let (true, Some(m)) = (v.is_self, k.view.max_grid_guests) {
            format!("open, at most {m} guests of other clusters at once")
        } else {
            "open".to_owned()
        }
    );
    if v.is_self {
        for p in &k.view.partners {
            println!(
                "  partner {}: priority {}, {}/{} nodes up, our processes {}, theirs {}{}; {} of its processes here",
                p.name,
                p.priority,
                p.up,
                p.nodes,
                if p.go {
                    "may go there"
                } else {
                    "do not go (nogo)"
                },
                if p.take {
                    "taken here"
                } else {
                    "not taken (notake)"
                },
                if p.idle_only { " only while idle" } else { "" },
                p.guests_here
            );
        }
        if !k.view.partners.is_empty() || k.view.own_guests > 0 {
            println!("  guests of this cluster here: {}", k.view.own_guests);
        }
        let f = &k.view.files;
        println!(
            "  files: MFS served {} requests ({} bytes) for other nodes and sent {} ({} bytes); DFSA opened {} files here for guests, {} calls ran here",
            f.mfs_served,
            f.mfs_served_bytes,
            f.mfs_sent,
            f.mfs_sent_bytes,
            f.dfsa_opens,
            f.dfsa_calls
        );
    }
    println!("  status bits: {} ({})", s.bits(), status_words(s));
    Ok(ExitCode::SUCCESS)
}

fn status_words(s: Status) -> String {
    let names = [
        (Status::CONF, "CONF"),
        (Status::UP, "UP"),
        (Status::STAY, "STAY"),
        (Status::LSTAY, "LSTAY"),
        (Status::BLOCK, "BLOCK"),
        (Status::QUIET, "QUIET"),
        (Status::NOMFS, "NOMFS"),
        (Status::CLOSED, "CLOSED"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| s.contains(*b))
        .map(|(_, n)| *n)
        .collect();
    v.join("|")
}

fn age(ms: Option<u64>) -> String {
    match ms {
        None => "never".to_owned(),
        Some(ms) if ms < 1000 => format!("{ms} ms ago"),
        Some(ms) if ms < 120_000 => format!("{:.1} s ago", ms as f64 / 1000.0),
        Some(ms) => format!("{} min ago", ms / 60_000),
    }
}

/// `isup`'s exit status when no service answers here: neither up (0) nor down (1), nor a
/// usage error (2).
const EXIT_NO_SERVICE: u8 = 3;

fn isup(node: &str, json: bool) -> Result<ExitCode> {
    let k = match known() {
        Ok(k) => k,
        Err(e) if matches!(e.downcast_ref(), Some(ClientError::NotConfigured { .. })) => {
            mosix_core::cli::report("mosctl", e.as_ref());
            return Ok(ExitCode::from(EXIT_NO_SERVICE));
        }
        Err(e) => return Err(e),
    };
    let v = k.node(Some(node))?;
    if json {
        print_json(&serde_json::json!({ "node": v.node, "up": v.up }))?;
    } else {
        println!("{}", yes(v.up));
    }
    Ok(if v.up {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn whois(what: Option<&str>, json: bool) -> Result<ExitCode> {
    let k = known()?;
    let Some(w) = what else {
        if json {
            print_json(
                &serde_json::json!({ "node": k.view.me, "addr": k.nodes.map.addr_of(k.view.me) }),
            )?;
        } else {
            println!("This is MOSIX node #{}", k.view.me);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let n = k.nodes.node(w)?;
    let addr = k.nodes.map.addr_of(n).context("node without an address")?;
    if json {
        print_json(&serde_json::json!({ "node": n, "addr": addr }))?;
    } else if w.chars().all(|c| c.is_ascii_digit()) {
        println!("{addr}");
    } else {
        println!("{n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn get(q: &NodeQuery, key: &str, pick: fn(&mosix_core::load::Figures) -> i64) -> Result<ExitCode> {
    let k = known()?;
    let v = match k.node(q.node.as_deref()) {
        Ok(v) => v,
        Err(e) if q.raw => {
            let _ = e;
            return emit(q, key, None, -EINVAL);
        }
        Err(e) => return Err(e),
    };
    let value = if !v.up {
        Err((
            -ENETUNREACH,
            format!("node {} is down (last heard {})", v.node, age(v.age_ms)),
        ))
    } else {
        match &v.figures {
            Some(f) => Ok(pick(f)),
            None => Err((
                -ENODATA,
                format!("node {} is quiet: it does not disseminate its load", v.node),
            )),
        }
    };
    match value {
        Ok(x) => emit(q, key, Some(v.node), x),
        Err((code, _)) if q.raw => emit(q, key, Some(v.node), code),
        Err((_, msg)) => bail!(msg),
    }
}

fn emit(q: &NodeQuery, key: &str, node: Option<NodeId>, value: i64) -> Result<ExitCode> {
    if q.json {
        let mut m = serde_json::Map::new();
        m.insert("node".into(), serde_json::json!(node));
        m.insert(key.into(), serde_json::json!(value));
        print_json(&m)?;
    } else {
        println!("{value}");
    }
    Ok(ExitCode::SUCCESS)
}

fn getdecay(json: bool) -> Result<ExitCode> {
    let d = client()?.decay()?;
    if json {
        print_json(&d)?;
    } else {
        println!(
            "decay interval {} s; slow decay keeps {} per mille, fast decay keeps {} per mille",
            d.interval_s, d.slow, d.fast
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn getfiletune(json: bool) -> Result<ExitCode> {
    let t = client()?.file_tune()?;
    if json {
        print_json(&t)?;
        return Ok(ExitCode::SUCCESS);
    }
    // In the file's own format: what it prints can be saved as an mfscosts file.
    print!("{}", t.to_text());
    Ok(ExitCode::SUCCESS)
}

fn gettune(json: bool) -> Result<ExitCode> {
    let t = client()?.tune()?;
    if json {
        print_json(&t)?;
        return Ok(ExitCode::SUCCESS);
    }
    // In the file's own format: what it prints can be saved as an overheads file.
    print!("{}", t.to_text());
    Ok(ExitCode::SUCCESS)
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn overheads_5_is_current() {
        let root = mosix_core::cli::docgen::workspace_root(env!("CARGO_MANIFEST_DIR"));
        mosix_core::cli::docgen::check(
            &root,
            std::path::Path::new("man/overheads.5"),
            mosix_core::overheads::man_page().as_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn classic_negations_are_accepted() {
        let c = Cli::try_parse_from(cli::classic_args(["mosctl".into(), "-block".into()])).unwrap();
        assert!(matches!(c.verb, Verb::Noblock));
        let c = Cli::try_parse_from(["mosctl", "getload", "3", "--raw"]).unwrap();
        assert!(matches!(c.verb, Verb::Getload(NodeQuery { raw: true, .. })));
    }

    #[test]
    fn status_words_name_the_bits() {
        assert_eq!(
            status_words(Status::CONF | Status::UP | Status::BLOCK),
            "CONF|UP|BLOCK"
        );
    }

    #[test]
    fn cli_man_page_and_completions_are_current() {
        mosix_core::cli::docgen::check_tool(env!("CARGO_MANIFEST_DIR"), Cli::command(), "1")
            .unwrap();
    }
}
