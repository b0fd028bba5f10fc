//! A progress line on stderr for long steps (sampling, training epochs, evaluation), so a run
//! shows how far it is and how long is left without a progress-bar crate.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Characters in the bar between the brackets.
const BAR_WIDTH: usize = 20;
/// Widest line drawn in place on a terminal; a wrapped line cannot be redrawn with `\r`.
const MAX_TTY_WIDTH: usize = 119;
/// Least time between two redraws on a terminal.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// Steps (in tenths of the total) between two plain lines when stderr is not a terminal.
const LOG_EVERY_TENTHS: usize = 1;

/// A progress line on stderr: `label  [#####-----]  12/40  30%  eta 1m05s  extra` redrawn in
/// place with `\r` when stderr is a terminal; otherwise one plain line at most every 10% so
/// logs stay readable.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: usize,
    done: usize,
    start: Instant,
    tty: bool,
    /// Terminal: when the line was last drawn, and how many characters it had.
    last_draw: Option<Instant>,
    drawn_len: usize,
    /// Plain lines: the last tenth logged, and what the last line showed.
    logged_tenth: Option<usize>,
    logged: Option<(usize, String)>,
    finished: bool,
    /// Where the text goes: stderr, or a recorder in tests.
    out: fn(&str),
}

impl Progress {
    /// Starts a progress line for `total` steps; nothing is printed until the first `set`.
    pub fn new(label: &str, total: usize) -> Self {
        Self {
            label: label.to_owned(),
            total,
            done: 0,
            start: Instant::now(),
            tty: std::io::stderr().is_terminal(),
            last_draw: None,
            drawn_len: 0,
            logged_tenth: None,
            logged: None,
            finished: false,
            out: emit,
        }
    }

    /// Advances to `done` and shows `extra` (e.g. "loss 0.412").
    pub fn set(&mut self, done: usize, extra: &str) {
        self.done = done;
        if self.tty {
            let due = self.last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY);
            if due || done >= self.total {
                self.draw(extra);
            }
        } else if let Some(tenth) = log_step(self.logged_tenth, done, self.total) {
            self.logged_tenth = Some(tenth);
            self.log(extra);
        }
    }

    /// Ends the line (prints the final state and a newline).
    pub fn finish(&mut self, extra: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.tty {
            self.draw(extra);
            (self.out)("\n");
        } else if self
            .logged
            .as_ref()
            .is_none_or(|(d, e)| *d != self.done || e != extra)
        {
            self.log(extra);
        }
    }

    fn line(&self, extra: &str) -> String {
        render(
            &self.label,
            self.done,
            self.total,
            self.start.elapsed(),
            extra,
        )
    }

    /// Redraws the line in place, blanking what a longer previous line left.
    fn draw(&mut self, extra: &str) {
        let line: String = self.line(extra).chars().take(MAX_TTY_WIDTH).collect();
        let len = line.chars().count();
        let blank = " ".repeat(self.drawn_len.saturating_sub(len));
        (self.out)(&format!("\r{line}{blank}"));
        self.drawn_len = len;
        self.last_draw = Some(Instant::now());
    }

    fn log(&mut self, extra: &str) {
        (self.out)(&format!("{}\n", self.line(extra)));
        self.logged = Some((self.done, extra.to_owned()));
    }
}

impl Drop for Progress {
    /// Leaves the terminal on a fresh line when the caller never finished (an error path).
    fn drop(&mut self) {
        if self.tty && self.last_draw.is_some() && !self.finished {
            (self.out)("\n");
        }
    }
}

/// Writes to stderr; a closed or failing stderr is ignored rather than a panic.
fn emit(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// The tenth of the way to log when `done` of `total` is reached and `last` was logged before,
/// or `None` when no line is due. The first call always logs; `total` 0 counts as complete.
fn log_step(last: Option<usize>, done: usize, total: usize) -> Option<usize> {
    // In u128 so `done * 10` cannot overflow; `total` 0 has nothing left to do.
    let tenth = (done.min(total) as u128 * 10)
        .checked_div(total as u128)
        .map_or(10, |t| t as usize);
    match last {
        None => Some(tenth),
        Some(prev) if tenth >= prev + LOG_EVERY_TENTHS => Some(tenth),
        Some(_) => None,
    }
}

/// One progress line: `label  [####------]  12/40  30%  eta 1m05s  extra`. `done` is clamped
/// to `total`; a complete line shows the time taken instead of the time left.
fn render(label: &str, done: usize, total: usize, elapsed: Duration, extra: &str) -> String {
    let done = done.min(total);
    let fraction = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = ((fraction * BAR_WIDTH as f64).floor() as usize).min(BAR_WIDTH);
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled));
    let percent = (fraction * 100.0).floor() as usize;
    let time = if done == total {
        format!("in {}", fmt_duration(elapsed.as_secs_f64()))
    } else if done == 0 {
        "eta ?".to_owned()
    } else {
        let left = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
        format!("eta {}", fmt_duration(left))
    };
    let mut line = format!("{label}  [{bar}]  {done}/{total}  {percent:>3}%  {time}");
    if !extra.is_empty() {
        line.push_str("  ");
        line.push_str(extra);
    }
    line
}

/// `42s`, `1m05s`, `2h03m`; rounded to whole seconds.
fn fmt_duration(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs.round() as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn renders_bar_counts_percent_and_eta() {
        let line = render("grpo", 12, 40, secs(28), "loss 0.412");
        assert_eq!(
            line,
            "grpo  [######--------------]  12/40   30%  eta 1m05s  loss 0.412"
        );
        let bar = line.split(['[', ']']).nth(1).unwrap();
        assert_eq!(bar.len(), BAR_WIDTH);
        assert_eq!(
            render("x", 0, 10, secs(5), ""),
            format!("x  [{}]  0/10    0%  eta ?", "-".repeat(20))
        );
    }

    #[test]
    fn complete_lines_show_time_taken_and_clamp() {
        let full = format!("[{}]", "#".repeat(BAR_WIDTH));
        let done = render("eval", 40, 40, secs(3725), "");
        assert_eq!(done, format!("eval  {full}  40/40  100%  in 1h02m"));
        assert_eq!(
            render("eval", 99, 40, secs(3725), ""),
            done,
            "done > total is clamped"
        );
        // Nothing to do: complete, no division by zero.
        assert_eq!(
            render("empty", 0, 0, secs(0), ""),
            format!("empty  {full}  0/0  100%  in 0s")
        );
        assert_eq!(
            render("empty", 3, 0, secs(1), "x"),
            format!("empty  {full}  0/0  100%  in 1s  x")
        );
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(fmt_duration(0.0), "0s");
        assert_eq!(fmt_duration(42.4), "42s");
        assert_eq!(fmt_duration(59.6), "1m00s");
        assert_eq!(fmt_duration(65.0), "1m05s");
        assert_eq!(fmt_duration(7380.0), "2h03m");
        assert_eq!(fmt_duration(f64::NAN), "0s");
        assert_eq!(fmt_duration(-3.0), "0s");
        assert_eq!(fmt_duration(f64::INFINITY), "0s");
        assert_eq!(
            fmt_duration(1e30),
            format!("{}h{:02}m", u64::MAX / 3600, u64::MAX % 3600 / 60)
        );
    }

    #[test]
    fn eta_is_never_huge_or_negative_on_odd_input() {
        let line = render("x", 1, usize::MAX, Duration::MAX, "");
        assert!(line.contains("eta "));
    }

    /// How many plain lines a loop of `total` steps logs through `log_step`.
    fn lines_logged(total: usize) -> usize {
        let mut last = None;
        let mut n = 0;
        for done in 1..=total {
            if let Some(t) = log_step(last, done, total) {
                last = Some(t);
                n += 1;
            }
        }
        n
    }

    #[test]
    fn plain_lines_every_tenth() {
        assert_eq!(lines_logged(1000), 11, "first step, then each 10%");
        assert_eq!(lines_logged(3), 3);
        assert_eq!(lines_logged(1), 1);
        assert_eq!(log_step(None, 0, 0), Some(10));
        assert_eq!(log_step(Some(10), 5, 0), None);
        assert_eq!(log_step(Some(3), 39, 100), None);
        assert_eq!(log_step(Some(3), 40, 100), Some(4));
        assert_eq!(log_step(Some(3), 95, 100), Some(9), "a jump logs once");
        assert_eq!(
            log_step(Some(10), 500, 100),
            None,
            "done > total stays at 100%"
        );
        assert_eq!(
            log_step(Some(9), usize::MAX, usize::MAX),
            Some(10),
            "no overflow"
        );
    }

    thread_local! {
        static WRITTEN: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }

    fn record(text: &str) {
        WRITTEN.with(|w| w.borrow_mut().push_str(text));
    }

    fn take_written() -> String {
        WRITTEN.with(|w| std::mem::take(&mut *w.borrow_mut()))
    }

    /// A plain-mode progress line whose output goes to `WRITTEN`.
    fn recorded(label: &str, total: usize) -> Progress {
        let mut p = Progress::new(label, total);
        p.tty = false;
        p.out = record;
        p
    }

    #[test]
    fn plain_mode_logs_tenths_and_one_final_line() {
        take_written();
        let mut p = recorded("steps", 1000);
        for i in 1..=1000 {
            p.set(i, "loss 1.0");
        }
        p.finish("loss 1.0");
        p.finish("again is a no-op");
        let text = take_written();
        assert_eq!(text.lines().count(), 11, "{text}");
        assert!(!text.contains('\r'));
        assert!(text
            .lines()
            .last()
            .unwrap()
            .contains("1000/1000  100%  in "));

        let mut q = recorded("steps", 4);
        q.set(2, "");
        q.finish("summary");
        let text = take_written();
        assert_eq!(
            text.lines().count(),
            2,
            "finish adds the final state: {text}"
        );
        assert!(text.ends_with("2/4   50%  eta 0s  summary\n"), "{text}");

        let mut z = recorded("zero", 0);
        z.set(0, "");
        z.finish("");
        assert_eq!(take_written().lines().count(), 1);
    }

    #[test]
    fn terminal_mode_redraws_in_place() {
        take_written();
        let mut p = recorded("steps", 3);
        p.tty = true;
        p.set(1, "a long extra text");
        p.set(3, "");
        p.finish("");
        let text = take_written();
        assert!(text.starts_with("\rsteps  ["), "{text:?}");
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with("\n"));
        // The shorter redraw blanks what the longer first line left behind.
        let first = text.split('\r').nth(1).unwrap();
        let second = text.split('\r').nth(2).unwrap();
        assert_eq!(first.chars().count(), second.chars().count());

        let mut q = recorded("dropped", 3);
        q.tty = true;
        q.set(1, "");
        drop(q);
        assert!(
            take_written().ends_with('\n'),
            "an unfinished line is ended on drop"
        );
    }
}
