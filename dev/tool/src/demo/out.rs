//! What the demo says. One short line per step on the terminal, numbered;
//! the step's details (the answers, the members, the audit records, the
//! SCIM target's users) under it in `.local/demo-details.log`, and on the
//! terminal too with `DEMO_DETAILS=1`.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// Where the details go (relative to the repository root, where dev/demo.sh runs the demo).
pub const DETAILS_LOG: &str = ".local/demo-details.log";

pub struct Out {
    log: RefCell<File>,
    pub path: PathBuf,
    /// `DEMO_DETAILS=1`: the details on the terminal too.
    pub inline: bool,
    steps: Cell<u32>,
    /// The details of the step under way: they are written under its line,
    /// which says what the step did and so comes once it is done.
    pending: RefCell<Vec<String>>,
}

impl Out {
    pub fn open() -> Result<Out, String> {
        let path = PathBuf::from(DETAILS_LOG);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let log = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let inline = std::env::var("DEMO_DETAILS").is_ok_and(|v| v == "1");
        Ok(Out { log: RefCell::new(log), path, inline, steps: Cell::new(0), pending: RefCell::new(Vec::new()) })
    }

    fn write(&self, text: &str) {
        // The log is a convenience: a full disk does not stop the demo.
        let _ = writeln!(self.log.borrow_mut(), "{text}");
    }

    /// A line on the terminal and in the log, as it is.
    pub fn say(&self, text: &str) {
        println!("{text}");
        self.write(text);
    }

    /// An act of the scenario: a heading.
    pub fn act(&self, title: &str) {
        self.flush();
        self.say(&format!("\n{title}"));
    }

    /// A step is done: its one line, then the details gathered for it.
    pub fn step(&self, line: &str) {
        let n = self.steps.get() + 1;
        self.steps.set(n);
        self.say(&format!("{n:>2}. {line}"));
        self.flush();
    }

    /// A detail of the step under way.
    pub fn detail(&self, text: impl Into<String>) {
        self.pending.borrow_mut().push(text.into());
    }

    /// The details gathered and not yet written (also what a failed step gathered).
    pub fn flush(&self) {
        for text in self.pending.borrow_mut().drain(..) {
            for line in text.lines() {
                self.write(&format!("      {line}"));
                if self.inline {
                    println!("      {line}");
                }
            }
        }
    }
}
