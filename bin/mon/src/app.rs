//! The monitor's state, and how keys and snapshots change it. Drawing only reads it.

use mosix_core::client::ClusterView;

/// What the bars show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Load (100 = one standard CPU busy).
    Load,
    /// Load on a logarithmic scale.
    LogLoad,
    /// Speed per CPU, with the number of CPUs.
    Speed,
    /// Memory: used solid, available as '+'.
    Memory,
    /// Raw memory: used (cache included) solid, free as '+'.
    RawMemory,
    /// Utilisation, percent.
    Util,
}

impl Mode {
    /// The title of the chart.
    pub fn title(self) -> &'static str {
        match self {
            Mode::Load => "load (100 = one standard CPU busy)",
            Mode::LogLoad => "load, logarithmic scale",
            Mode::Speed => "speed per CPU (10000 = standard); number of CPUs on top",
            Mode::Memory => "memory: used solid, available as +",
            Mode::RawMemory => "raw memory: used solid, free as +",
            Mode::Util => "utilisation (% of the node's CPU capacity)",
        }
    }
}

/// How node numbers are laid out under the bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Numbers across; wide bars.
    Wide,
    /// Numbers downwards; two columns a node.
    Vertical,
    /// Numbers downwards; one column a node.
    Tight,
    /// The widest layout that shows every node.
    Auto,
}

/// The monitor's state.
#[derive(Debug, Clone)]
pub struct App {
    /// What the bars show.
    pub mode: Mode,
    /// The numbering layout.
    pub layout: Layout,
    /// Show dead nodes too.
    pub show_dead: bool,
    /// Show totals.
    pub totals: bool,
    /// Index of the first node shown.
    pub offset: usize,
    /// The latest view.
    pub view: Option<ClusterView>,
    /// The latest collection error, if the last attempt failed.
    pub error: Option<String>,
    /// Set when the user asked to quit.
    pub quit: bool,
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A character key.
    Char(char),
    /// Scroll left.
    Left,
    /// Scroll right.
    Right,
    /// To the first node.
    Home,
    /// To the last nodes.
    End,
    /// Escape or Ctrl-C.
    Quit,
}

impl App {
    /// A new state.
    pub fn new(mode: Mode, layout: Layout, show_dead: bool, totals: bool) -> App {
        App {
            mode,
            layout,
            show_dead,
            totals,
            offset: 0,
            view: None,
            error: None,
            quit: false,
        }
    }

    /// Takes a new snapshot (or the error of collecting one).
    pub fn update(&mut self, snap: Result<ClusterView, String>) {
        match snap {
            Ok(v) => {
                self.view = Some(v);
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// The nodes drawn, in order.
    pub fn shown(&self) -> Vec<&mosix_core::client::NodeView> {
        self.view.as_ref().map_or_else(Vec::new, |v| {
            v.nodes.iter().filter(|n| self.show_dead || n.up).collect()
        })
    }

    /// Starts the display at node `n` (or the first node after it).
    pub fn start_at(&mut self, n: u16) {
        let shown = self.shown();
        self.offset = shown.iter().position(|v| v.node.get() >= n).unwrap_or(0);
    }

    /// Applies a key.
    pub fn key(&mut self, k: Key) {
        let count = self.shown().len();
        match k {
            Key::Char('q') | Key::Quit => self.quit = true,
            Key::Char('l') => self.mode = Mode::Load,
            Key::Char('L') => self.mode = Mode::LogLoad,
            Key::Char('s') => self.mode = Mode::Speed,
            Key::Char('m') => self.mode = Mode::Memory,
            Key::Char('r') => self.mode = Mode::RawMemory,
            Key::Char('u') => self.mode = Mode::Util,
            Key::Char('d') => {
                self.show_dead = !self.show_dead;
                self.offset = 0;
            }
            Key::Char('t') => self.totals = !self.totals,
            Key::Char('w') => self.layout = Layout::Wide,
            Key::Char('v') => self.layout = Layout::Vertical,
            Key::Char('V') => self.layout = Layout::Tight,
            Key::Char('a') => self.layout = Layout::Auto,
            Key::Left => self.offset = self.offset.saturating_sub(1),
            Key::Right => {
                if self.offset + 1 < count {
                    self.offset += 1;
                }
            }
            Key::Home => self.offset = 0,
            Key::End => self.offset = count.saturating_sub(1),
            Key::Char(_) => {}
        }
        self.offset = self.offset.min(count.saturating_sub(1));
    }
}
