//! Progress on stderr: a bar per stage on a terminal, a line per stage otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How the driver shows progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Nothing.
    Off,
    /// A line when each stage ends.
    Lines,
    /// A bar per stage, redrawn as tasks finish.
    Bars,
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn auto() -> Self {
        if std::io::stderr().is_terminal() { Progress::Bars } else { Progress::Lines }
    }

    /// The display of one stage.
    pub fn stage(self, name: &str, tasks: u32) -> StageBar {
        let bar = StageBar { mode: self, name: name.to_string(), tasks, drawn: None };
        if self == Progress::Bars {
            bar.draw(0, 0);
        }
        bar
    }
}

/// One stage's progress display.
#[derive(Debug)]
pub struct StageBar {
    mode: Progress,
    name: String,
    tasks: u32,
    drawn: Option<Instant>,
}

const WIDTH: usize = 30;

impl StageBar {
    fn draw(&self, done: usize, retries: usize) {
        let filled = if self.tasks == 0 { WIDTH } else { done * WIDTH / self.tasks as usize };
        let retries = if retries > 0 { format!(" · {retries} retried") } else { String::new() };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r  {:<10} [{}{}] {done}/{} tasks{retries}  ",
            self.name,
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.tasks
        );
        let _ = err.flush();
    }

    /// `done` tasks are committed, `retries` attempts were retried.
    pub fn update(&mut self, done: usize, retries: usize) {
        if self.mode != Progress::Bars {
            return;
        }
        // Redraw at most every 50 ms, and always for the last task.
        if done < self.tasks as usize && self.drawn.is_some_and(|t| t.elapsed() < Duration::from_millis(50)) {
            return;
        }
        self.drawn = Some(Instant::now());
        self.draw(done, retries);
    }

    /// The stage finished in `seconds`.
    pub fn finish(&mut self, seconds: f64) {
        match self.mode {
            Progress::Off => {}
            Progress::Lines => eprintln!("  {:<10} {} tasks done in {:.2} s", self.name, self.tasks, seconds),
            Progress::Bars => eprintln!("{:.2} s", seconds),
        }
    }

    /// The stage failed.
    pub fn fail(&mut self) {
        match self.mode {
            Progress::Off => {}
            Progress::Lines => eprintln!("  {:<10} failed", self.name),
            Progress::Bars => eprintln!("failed"),
        }
    }
}
