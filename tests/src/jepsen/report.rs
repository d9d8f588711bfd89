//! `report.html`: one self-contained page per run (inline SVG, a few lines of inline script, no
//! network): the verdict and problems, a latency-over-time timeline per workload with the fault
//! windows shaded, and tables of checks, operations, faults and nodes.

use std::fmt::Write as _;

use super::history::{pair, Event, OpKind};
use super::run::{Results, RunVerdict};

const WIDTH: f64 = 1200.0;
const LANE_HEIGHT: f64 = 220.0;
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_TOP: f64 = 34.0;
/// Latency axis: 0.1 ms to 10 s, logarithmic.
const LATENCY_MIN_MS: f64 = 0.1;
const LATENCY_MAX_MS: f64 = 10_000.0;

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Ok => "#2e9e44",
        OpKind::Fail => "#d62728",
        OpKind::Info | OpKind::Invoke => "#ff9f1a",
    }
}

/// Rows for the labels of phases that start close together (the last four take well under a
/// second).
const PHASE_LABEL_ROWS: usize = 4;

/// A log index, or "-" for none.
fn or_dash(index: Option<u64>) -> String {
    index.map_or_else(|| "-".to_string(), |index| index.to_string())
}

/// The page for `results` and its history.
pub fn html(results: &Results, events: &[Event]) -> String {
    let end_ns = events
        .last()
        .map_or(1, |event| event.time_ns)
        .max(results.phases.values().copied().max().unwrap_or(1))
        .max(1);
    let plot_width = WIDTH - MARGIN_LEFT - 20.0;
    let x = |ns: u64| MARGIN_LEFT + plot_width * ns as f64 / end_ns as f64;
    let y = |top: f64, latency_ms: f64| {
        let clamped = latency_ms.clamp(LATENCY_MIN_MS, LATENCY_MAX_MS);
        let span = (LATENCY_MAX_MS / LATENCY_MIN_MS).log10();
        top + LANE_HEIGHT - (clamped / LATENCY_MIN_MS).log10() / span * LANE_HEIGHT
    };

    let mut page = String::new();
    let verdict_color = match results.verdict {
        RunVerdict::Valid => "#2e9e44",
        RunVerdict::Invalid => "#d62728",
        RunVerdict::Unknown | RunVerdict::Failed => "#ff9f1a",
    };
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{name} seed {seed}: {verdict:?}</title>\
         <style>body{{font:14px sans-serif;margin:20px;color:#222}}table{{border-collapse:collapse;margin:8px 0}}\
         td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top;font-size:13px}}\
         .verdict{{color:white;background:{verdict_color};padding:2px 8px;border-radius:4px}}\
         pre{{background:#f6f6f6;padding:6px;white-space:pre-wrap;font-size:12px}}\
         svg text{{font:11px sans-serif}}</style></head><body>\
         <h1>{name} <span class=\"verdict\">{verdict}</span></h1>\
         <p>seed <b>{seed}</b> (replay: <code>CONCLAVE_JEPSEN_SEED={seed}</code>), {nodes} nodes, \
         workloads {workloads}, network {network:?}, {elapsed:.1} s, {events} history events. \
         Files: <a href=\"history.jsonl\">history.jsonl</a>, <a href=\"nemesis.log\">nemesis.log</a>, \
         <a href=\"results.json\">results.json</a>, node logs <code>node-N.log</code>.</p>",
        name = escape(&results.name),
        seed = results.seed,
        verdict = format!("{:?}", results.verdict).to_lowercase(),
        nodes = results.config.nodes,
        workloads = escape(&results.config.workloads.join(", ")),
        network = results.config.network,
        elapsed = results.elapsed_ms as f64 / 1000.0,
        events = events.len(),
    );

    if results.problems.is_empty() {
        page.push_str("<p>No problems found.</p>");
    } else {
        page.push_str("<h2>Problems</h2>");
        for problem in &results.problems {
            let _ = write!(page, "<pre>{}</pre>", escape(problem));
        }
    }

    // The timeline: one lane per workload, latency (log) over time, faults shaded.
    let lanes: Vec<&str> = results
        .config
        .workloads
        .iter()
        .map(String::as_str)
        .collect();
    // Below the lanes: rows of phase labels.
    let height = MARGIN_TOP
        + lanes.len() as f64 * (LANE_HEIGHT + 30.0)
        + 18.0
        + 12.0 * PHASE_LABEL_ROWS as f64;
    page.push_str(
        "<h2>Timeline</h2><p>Each dot is one operation at its invocation time, its height the \
         latency (log scale; <span style=\"color:#2e9e44\">ok</span>, \
         <span style=\"color:#d62728\">fail</span>, <span style=\"color:#ff9f1a\">info</span>, \
         info without an answer at the top). Shaded: fault windows (hover for details; grey when \
         the fault left no evidence). Dashed lines: phases. Hover a dot for the operation.</p>\
         <p><label><input type=checkbox checked onclick=\"toggle('ok',this)\"> ok</label> \
         <label><input type=checkbox checked onclick=\"toggle('fail',this)\"> fail</label> \
         <label><input type=checkbox checked onclick=\"toggle('info',this)\"> info</label></p>",
    );
    let _ = write!(
        page,
        "<svg width=\"{WIDTH}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (number, window) in results.faults.iter().enumerate() {
        let (left, right) = (x(window.start_ns), x(window.end_ns));
        // Labels alternate between two lines so that neighbours do not overlap.
        let label_y = if number % 2 == 0 {
            MARGIN_TOP - 12.0
        } else {
            MARGIN_TOP - 2.0
        };
        let fill = if window.took_effect {
            "#f4a4a4"
        } else {
            "#cccccc"
        };
        let _ = write!(
            page,
            "<rect x=\"{left:.1}\" y=\"{MARGIN_TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" \
             opacity=\"0.35\"><title>{} ({:.1}-{:.1} s): {}. {}</title></rect>\
             <text x=\"{left:.1}\" y=\"{:.1}\" fill=\"#a33\">{}</text>",
            (right - left).max(1.0),
            height - MARGIN_TOP - 20.0,
            window.nemesis.name(),
            window.start_ns as f64 / 1e9,
            window.end_ns as f64 / 1e9,
            escape(&window.description),
            escape(&window.evidence),
            label_y,
            window.nemesis.name(),
        );
    }
    // Phases that start close together (setup and warm-up, heal and quiesce) put their labels on
    // different rows; a label is about 7 px per character wide.
    let mut phases: Vec<(&String, u64)> = results.phases.iter().map(|(p, ns)| (p, *ns)).collect();
    phases.sort_by_key(|&(phase, ns)| (ns, phase.clone()));
    let mut row_ends = [f64::MIN; PHASE_LABEL_ROWS];
    for (phase, ns) in phases {
        let left = x(ns);
        let row = (0..row_ends.len())
            .find(|&row| left + 2.0 >= row_ends[row] + 4.0)
            .unwrap_or_else(|| {
                (0..row_ends.len())
                    .min_by(|&a, &b| row_ends[a].total_cmp(&row_ends[b]))
                    .unwrap_or(0)
            });
        row_ends[row] = left + 2.0 + 7.0 * phase.len() as f64;
        let _ = write!(
            page,
            "<line x1=\"{left:.1}\" x2=\"{left:.1}\" y1=\"{MARGIN_TOP}\" y2=\"{:.1}\" stroke=\"#555\" \
             stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555\">{phase}</text>",
            height - 8.0 - 12.0 * PHASE_LABEL_ROWS as f64,
            left + 2.0,
            height - 6.0 - 12.0 * (PHASE_LABEL_ROWS - 1 - row) as f64,
        );
    }
    for (lane, workload) in lanes.iter().enumerate() {
        let top = MARGIN_TOP + lane as f64 * (LANE_HEIGHT + 30.0) + 14.0;
        let _ = write!(
            page,
            "<text x=\"4\" y=\"{:.1}\" font-weight=\"bold\">{workload}</text>\
             <rect x=\"{MARGIN_LEFT}\" y=\"{top:.1}\" width=\"{plot_width}\" height=\"{LANE_HEIGHT}\" \
             fill=\"none\" stroke=\"#999\"/>",
            top - 2.0,
        );
        for tick_ms in [1.0, 10.0, 100.0, 1000.0] {
            let tick_y = y(top, tick_ms);
            let _ = write!(
                page,
                "<line x1=\"{MARGIN_LEFT}\" x2=\"{:.1}\" y1=\"{tick_y:.1}\" y2=\"{tick_y:.1}\" \
                 stroke=\"#eee\"/><text x=\"4\" y=\"{:.1}\">{tick_ms} ms</text>",
                MARGIN_LEFT + plot_width,
                tick_y + 4.0
            );
        }
        let Ok(operations) = pair(events, Some(workload)) else {
            continue;
        };
        for operation in operations {
            if operation.invoke.f == "watch" || operation.invoke.f == "final-watch" {
                continue;
            }
            let kind = operation.outcome();
            let latency_ms = operation
                .complete
                .map(|complete| (complete.time_ns - operation.invoke.time_ns) as f64 / 1e6);
            let dot_y = match latency_ms {
                Some(ms) => y(top, ms),
                None => top + 2.0,
            };
            let class = match kind {
                OpKind::Ok => "ok",
                OpKind::Fail => "fail",
                _ => "info",
            };
            let error = operation
                .complete
                .and_then(|c| c.error.as_deref())
                .unwrap_or("");
            let _ = write!(
                page,
                "<circle class=\"{class}\" cx=\"{:.1}\" cy=\"{dot_y:.1}\" r=\"2\" fill=\"{}\">\
                 <title>{} {} {} p{} node {:?} {:?} {} ms {}</title></circle>",
                x(operation.invoke.time_ns),
                color(kind),
                operation.invoke.f,
                escape(operation.invoke.key.as_deref().unwrap_or("")),
                escape(&short(&operation.value().to_string())),
                operation.invoke.process,
                operation.invoke.node,
                kind,
                latency_ms.map_or("-".to_string(), |ms| format!("{ms:.1}")),
                escape(error),
            );
        }
    }
    for second in (0..=(end_ns / 1_000_000_000)).step_by(5) {
        let left = x(second * 1_000_000_000);
        let _ = write!(
            page,
            "<text x=\"{left:.1}\" y=\"{:.1}\" fill=\"#777\">{second}s</text>",
            MARGIN_TOP + 10.0
        );
    }
    page.push_str("</svg>");

    // Checks.
    page.push_str("<h2>Checks</h2><table><tr><th>workload</th><th>verdict</th><th>stats</th><th>problems</th></tr>");
    for check in &results.checks {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{:?}</td><td><pre>{}</pre></td><td>{}</td></tr>",
            escape(&check.workload),
            check.verdict,
            escape(&serde_json::to_string_pretty(&check.stats).unwrap_or_default()),
            check
                .problems
                .iter()
                .map(|p| format!("<pre>{}</pre>", escape(p)))
                .collect::<String>()
        );
    }
    page.push_str("</table>");

    // Operations.
    page.push_str("<h2>Operations</h2><table><tr><th>workload</th><th>f</th><th>ok</th><th>fail</th><th>info</th></tr>");
    for (workload, fs) in &results.ops {
        for (f, outcomes) in fs {
            let count = |k: &str| outcomes.get(k).copied().unwrap_or(0);
            let _ = write!(
                page,
                "<tr><td>{workload}</td><td>{f}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                count("ok"),
                count("fail"),
                count("info")
            );
        }
    }
    page.push_str("</table>");

    // Faults.
    page.push_str("<h2>Faults</h2><table><tr><th>from (s)</th><th>to (s)</th><th>nemesis</th><th>what</th><th>took effect</th><th>evidence</th></tr>");
    for window in &results.faults {
        let _ = write!(
            page,
            "<tr><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            window.start_ns as f64 / 1e9,
            window.end_ns as f64 / 1e9,
            window.nemesis.name(),
            escape(&window.description),
            window.took_effect,
            escape(&window.evidence)
        );
    }
    page.push_str("</table>");

    // Nodes.
    page.push_str("<h2>Nodes at the end</h2><table><tr><th>node</th><th>applied</th><th>state digest</th><th>revision</th><th>term</th><th>snapshot index</th><th>purged</th><th>snapshots built</th><th>snapshots received</th></tr>");
    for node in &results.nodes {
        let _ = write!(
            page,
            "<tr><td><a href=\"node-{id}.log\">{id}</a></td><td>{}</td><td>{:x}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            or_dash(node.applied_index),
            node.state_digest,
            node.revision,
            node.term,
            or_dash(node.snapshot_index),
            or_dash(node.purged_index),
            node.snapshots_built,
            node.snapshots_received,
            id = node.id,
        );
    }
    page.push_str("</table>");

    let mut phases: Vec<(&String, u64)> = results.phases.iter().map(|(p, ns)| (p, *ns)).collect();
    phases.sort_by_key(|&(phase, ns)| (ns, phase.clone()));
    let phases: Vec<String> = phases
        .into_iter()
        .map(|(phase, ns)| format!("{phase} at {:.1} s", ns as f64 / 1e9))
        .collect();
    let _ = write!(
        page,
        "<h2>Configuration</h2><pre>{}</pre><p>Phases: {}</p>",
        escape(&serde_json::to_string_pretty(&results.config).unwrap_or_default()),
        escape(&phases.join(", "))
    );
    page.push_str(
        "<script>function toggle(c,box){for(const e of document.getElementsByClassName(c))\
         e.style.display=box.checked?'':'none';}</script></body></html>",
    );
    page
}

fn short(text: &str) -> String {
    if text.len() <= 80 {
        text.to_string()
    } else {
        let mut cut = 80;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &text[..cut])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::jepsen::history::Script;
    use crate::jepsen::nemesis::{FaultWindow, Nemesis};
    use crate::jepsen::run::RunConfig;

    #[test]
    fn the_page_is_self_contained_and_escapes_what_it_shows() {
        let events = Script::new("register")
            .invoke(1, "write", Some("k<1>"), json!(1))
            .ok(1, json!(1))
            .invoke(2, "read", Some("k<1>"), serde_json::Value::Null)
            .info(2)
            .events();
        let results = Results {
            name: "demo".into(),
            seed: 7,
            verdict: RunVerdict::Invalid,
            passed: false,
            problems: vec!["safety: register: <script>".into()],
            config: RunConfig::short("demo", &["register"], &[Nemesis::KillOne]),
            checks: Vec::new(),
            ops: BTreeMap::new(),
            faults: vec![FaultWindow {
                nemesis: Nemesis::KillOne,
                description: "SIGKILL [1]".into(),
                targets: vec![1],
                start_ns: 1_000,
                end_ns: 3_000,
                took_effect: true,
                evidence: "node 1 killed".into(),
            }],
            nodes: Vec::new(),
            phases: BTreeMap::from([("faults".to_string(), 500)]),
            dir: "/tmp/demo".into(),
            elapsed_ms: 1,
        };
        let page = html(&results, &events);
        assert!(page.starts_with("<!doctype html>") && page.ends_with("</html>"));
        assert!(!page.contains("http://") || page.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(!page.contains("src=\"http"), "no external resources");
        assert!(page.contains("&lt;script&gt;") && !page.contains("<script>safety"));
        assert!(page.contains("k&lt;1&gt;"));
        assert_eq!(page.matches("<circle").count(), 2, "one dot per operation");
        assert!(page.contains("kill-one") && page.contains("node 1 killed"));
    }
}
