//! A grid of MOSIX clusters inside one virtual cluster: the nodes 1..N on the one bridge are
//! cut into consecutive parts, each part a MOSIX cluster of its own — its own map (its nodes'
//! numbers, which are grid-wide, partners(5)), its own secret, its own `[grid] name` — and
//! every part names every other as a partner, with a secret per partnership and the priorities
//! and terms given.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::Cluster;

/// The default priority one part gives another.
pub const DEFAULT_PRIORITY: u16 = 10;

/// One MOSIX cluster of a grid: nodes `first..first+count-1` of the virtual cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Its name (`[grid] name`).
    pub name: String,
    /// Its first node.
    pub first: u16,
    /// How many nodes.
    pub count: u16,
    /// The priority it gives each other part (default [`DEFAULT_PRIORITY`]).
    #[serde(default)]
    pub priorities: BTreeMap<String, u16>,
    /// The options (`nogo`, `notake`, `idle`) it gives other parts, space-separated.
    #[serde(default)]
    pub terms: BTreeMap<String, String>,
}

impl Part {
    /// Whether node I is in this part.
    pub fn has(&self, node: u16) -> bool {
        (self.first..self.first + self.count).contains(&node)
    }

    /// The nodes of this part.
    pub fn nodes(&self) -> std::ops::Range<u16> {
        self.first..self.first + self.count
    }
}

/// Cuts `sizes` (e.g. "2,2,3") into parts named a, b, c…; `priorities` are `X:Y=P` (part X
/// gives part Y priority P) and `terms` `X:Y=opt[+opt]` (part X's options for part Y).
pub fn parts(sizes: &str, priorities: &[String], terms: &[String]) -> Result<Vec<Part>> {
    let mut parts: Vec<Part> = Vec::new();
    let mut next = 1u16;
    for (i, s) in sizes.split(',').enumerate() {
        let count: u16 = s
            .trim()
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .with_context(|| format!("'{s}' is not a number of nodes (in --grid {sizes})"))?;
        if i >= 26 {
            bail!("at most 26 clusters in a grid");
        }
        parts.push(Part {
            name: ((b'a' + i as u8) as char).to_string(),
            first: next,
            count,
            priorities: BTreeMap::new(),
            terms: BTreeMap::new(),
        });
        next = next
            .checked_add(count)
            .context("too many nodes in --grid")?;
    }
    if parts.len() < 2 {
        bail!("a grid has at least two clusters (--grid 2,2)");
    }
    let names: Vec<String> = parts.iter().map(|p| p.name.clone()).collect();
    let split = |spec: &str, what: &str| -> Result<(String, String, String)> {
        let (pair, value) = spec
            .split_once('=')
            .with_context(|| format!("{what} '{spec}': expected X:Y=VALUE"))?;
        let (x, y) = pair
            .split_once(':')
            .with_context(|| format!("{what} '{spec}': expected X:Y=VALUE"))?;
        for n in [x, y] {
            if !names.iter().any(|p| p == n) {
                bail!("{what} '{spec}': there is no cluster '{n}' in the grid");
            }
        }
        if x == y {
            bail!("{what} '{spec}': a cluster is not its own partner");
        }
        Ok((x.to_owned(), y.to_owned(), value.to_owned()))
    };
    for p in priorities {
        let (x, y, v) = split(p, "--priority")?;
        let v: u16 = v
            .parse()
            .ok()
            .filter(|v| (1..=65534).contains(v))
            .with_context(|| format!("--priority '{p}': the priority is 1..65534"))?;
        if let Some(part) = parts.iter_mut().find(|q| q.name == x) {
            part.priorities.insert(y, v);
        }
    }
    for t in terms {
        let (x, y, v) = split(t, "--terms")?;
        let words: Vec<&str> = v.split('+').collect();
        if let Some(w) = words
            .iter()
            .find(|w| !matches!(**w, "nogo" | "notake" | "idle"))
        {
            bail!("--terms '{t}': unknown option '{w}' (nogo, notake, idle)");
        }
        if let Some(part) = parts.iter_mut().find(|q| q.name == x) {
            part.terms.insert(y, words.join(" "));
        }
    }
    Ok(parts)
}

/// The map of one part.
pub(crate) fn part_map(c: &Cluster, p: &Part) -> String {
    format!(
        "# cluster '{}' of virtual grid '{}'\n{} {} {}\n",
        p.name,
        c.name,
        p.first,
        c.addr(p.first),
        p.count
    )
}

/// The secrets of a grid: one per part, one per pair of parts.
#[derive(Debug, Clone)]
pub(crate) struct Secrets {
    own: BTreeMap<String, String>,
    pairs: BTreeMap<(String, String), String>,
}

impl Secrets {
    pub(crate) fn new(parts: &[Part]) -> Secrets {
        let mut own = BTreeMap::new();
        let mut pairs = BTreeMap::new();
        for (i, a) in parts.iter().enumerate() {
            own.insert(a.name.clone(), crate::files::random_secret());
            for b in &parts[i + 1..] {
                pairs.insert(
                    (a.name.clone(), b.name.clone()),
                    crate::files::random_secret(),
                );
            }
        }
        Secrets { own, pairs }
    }

    /// Part `p`'s own secret.
    pub(crate) fn own(&self, p: &str) -> &str {
        self.own.get(p).map_or("", String::as_str)
    }

    fn pair(&self, a: &str, b: &str) -> &str {
        let key = if a < b {
            (a.to_owned(), b.to_owned())
        } else {
            (b.to_owned(), a.to_owned())
        };
        self.pairs.get(&key).map_or("", String::as_str)
    }
}

fn write_secret(path: &Path, secret: &str) -> Result<()> {
    fs::write(path, format!("{secret}\n")).with_context(|| path.display().to_string())?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| path.display().to_string())
}

/// Writes node I's partners file and its partners' maps and secrets (`etc/mosix/partners`,
/// `etc/mosix/partners.d/`).
pub(crate) fn write_partners(c: &Cluster, me: &Part, secrets: &Secrets, node: u16) -> Result<()> {
    let paths = c.paths(node);
    let dir = paths.etc.join("mosix").join("partners.d");
    fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
    let mut text = format!(
        "# partners of cluster '{}' (virtual grid '{}'), see partners(5)\n# name priority map secret [options]\n",
        me.name, c.name
    );
    for p in c.grid.iter().filter(|p| p.name != me.name) {
        fs::write(dir.join(format!("{}.map", p.name)), part_map(c, p))
            .with_context(|| dir.display().to_string())?;
        write_secret(
            &dir.join(format!("{}.secret", p.name)),
            secrets.pair(&me.name, &p.name),
        )?;
        let prio = me
            .priorities
            .get(&p.name)
            .copied()
            .unwrap_or(DEFAULT_PRIORITY);
        let terms = me.terms.get(&p.name).map_or("", String::as_str);
        text.push_str(&format!(
            "{0} {prio} partners.d/{0}.map partners.d/{0}.secret {terms}\n",
            p.name
        ));
    }
    let file = paths.partners();
    fs::write(&file, text).with_context(|| file.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_cut_into_named_parts_with_priorities_and_terms() {
        let p = parts("2,2,3", &["b:a=5".into()], &["c:a=idle+notake".into()]).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].name.as_str(), p[0].first, p[0].count), ("a", 1, 2));
        assert_eq!((p[2].name.as_str(), p[2].first, p[2].count), ("c", 5, 3));
        assert!(p[1].has(4) && !p[1].has(5));
        assert_eq!(p[1].priorities.get("a"), Some(&5));
        assert_eq!(p[2].terms.get("a").map(String::as_str), Some("idle notake"));
        assert!(parts("2", &[], &[]).is_err());
        assert!(parts("2,x", &[], &[]).is_err());
        assert!(parts("2,2", &["a:z=5".into()], &[]).is_err());
        assert!(parts("2,2", &["a:b=0".into()], &[]).is_err());
        assert!(parts("2,2", &["a:a=3".into()], &[]).is_err());
        assert!(parts("2,2", &[], &["a:b=sometimes".into()]).is_err());
    }
}
