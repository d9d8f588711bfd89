//! Prometheus's text exposition format (version 0.0.4), parsed into typed records once; then one
//! small function per property a scraper relies on.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, ensure, Context};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Clone, Debug)]
pub struct Family {
    pub name: String,
    pub help: Option<String>,
    pub kind: Option<Kind>,
    pub samples: Vec<Sample>,
}

/// One scrape: families by name, each with the samples that belong to it.
#[derive(Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

impl Exposition {
    pub fn family(&self, name: &str) -> anyhow::Result<&Family> {
        self.families
            .get(name)
            .with_context(|| format!("no family {name}"))
    }

    /// The value of the one sample of `name` with `labels` (given as name=value pairs).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let family = self
            .families
            .values()
            .find(|family| family.samples.iter().any(|s| s.name == name))
            .with_context(|| format!("no sample named {name}"))?;
        let matching: Vec<&Sample> = family
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        ensure!(
            matching.len() == 1,
            "{} samples of {name} match {labels:?}",
            matching.len()
        );
        Ok(matching[0].value)
    }
}

/// `GET /metrics` over a plain HTTP/1.1 connection; the body, after checking the status and
/// content type.
pub fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8(response).context("the response is UTF-8")?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers")?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    ensure!(status.starts_with("HTTP/1.1 200"), "status line {status:?}");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    ensure!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "content type {content_type:?}"
    );
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        return dechunk(body);
    }
    Ok(body.to_string())
}

fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("chunk size line")?;
        let size = usize::from_str_radix(size.trim(), 16).context("chunk size")?;
        if size == 0 {
            return Ok(text);
        }
        text.push_str(rest.get(..size).context("short chunk")?);
        body = rest.get(size + 2..).context("chunk end")?;
    }
}

/// Parses the text format: `# HELP`, `# TYPE`, other comments, samples
/// `name{label="value",...} value [timestamp]`. A sample belongs to the family named in the
/// last TYPE or HELP line if its name is that name or, for histograms and summaries, that name
/// with `_bucket`, `_sum` or `_count`; otherwise it opens an untyped family of its own.
pub fn parse(text: &str) -> anyhow::Result<Exposition> {
    let mut exposition = Exposition::default();
    let mut current: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let context = || format!("line {}: {line:?}", number + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = words.next().with_context(context)?.to_string();
            let rest = words.next().unwrap_or_default().to_string();
            let family = exposition
                .families
                .entry(name.clone())
                .or_insert_with(|| Family {
                    name: name.clone(),
                    help: None,
                    kind: None,
                    samples: Vec::new(),
                });
            if keyword == "HELP" {
                ensure!(family.help.is_none(), "second HELP: {}", context());
                family.help = Some(rest);
            } else {
                ensure!(family.kind.is_none(), "second TYPE: {}", context());
                ensure!(
                    family.samples.is_empty(),
                    "TYPE after samples: {}",
                    context()
                );
                family.kind = Some(match rest.as_str() {
                    "counter" => Kind::Counter,
                    "gauge" => Kind::Gauge,
                    "histogram" => Kind::Histogram,
                    "summary" => Kind::Summary,
                    "untyped" => Kind::Untyped,
                    other => bail!("unknown type {other:?}: {}", context()),
                });
            }
            current = Some(name);
            continue;
        }
        let sample = parse_sample(line).with_context(context)?;
        let owner = current
            .as_ref()
            .filter(|family| belongs(&sample.name, family, &exposition.families[*family]))
            .cloned()
            .unwrap_or_else(|| sample.name.clone());
        exposition
            .families
            .entry(owner.clone())
            .or_insert_with(|| Family {
                name: owner.clone(),
                help: None,
                kind: None,
                samples: Vec::new(),
            })
            .samples
            .push(sample);
        current = Some(owner);
    }
    Ok(exposition)
}

fn belongs(sample: &str, family_name: &str, family: &Family) -> bool {
    if sample == family_name {
        return true;
    }
    let suffixes: &[&str] = match family.kind {
        Some(Kind::Histogram) => &["_bucket", "_sum", "_count"],
        Some(Kind::Summary) => &["_sum", "_count"],
        _ => &[],
    };
    suffixes
        .iter()
        .any(|suffix| sample.strip_suffix(suffix) == Some(family_name))
}

fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let (name_and_labels, rest) = match line.find('{') {
        Some(_) => {
            let close = line.rfind('}').context("unclosed labels")?;
            (&line[..close + 1], line[close + 1..].trim())
        }
        None => line.split_once(' ').context("no value")?,
    };
    let (name, labels) = match name_and_labels.split_once('{') {
        Some((name, labels)) => (
            name,
            parse_labels(labels.strip_suffix('}').context("labels end")?)?,
        ),
        None => (name_and_labels, BTreeMap::new()),
    };
    let value = rest.split_whitespace().next().context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number
            .parse()
            .with_context(|| format!("value {number:?}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(mut text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (name, rest) = text.split_once("=\"").context("label without =\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().context("unterminated label value")? {
                (_, '\\') => match chars.next().context("dangling escape")?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (at, '"') => break at,
                (_, other) => value.push(other),
            }
        };
        ensure!(
            labels.insert(name.to_string(), value).is_none(),
            "label {name} twice"
        );
        text = rest[end + 1..].trim_start_matches(',');
    }
    Ok(labels)
}

// ---- properties ----

/// Every family with samples has a HELP and a TYPE line.
pub fn every_family_has_help_and_type(exposition: &Exposition) -> anyhow::Result<()> {
    for family in exposition.families.values() {
        if family.samples.is_empty() {
            continue;
        }
        ensure!(family.help.is_some(), "{} has no HELP", family.name);
        ensure!(family.kind.is_some(), "{} has no TYPE", family.name);
    }
    Ok(())
}

/// Metric and label names are valid, and lowercase snake case as Prometheus's conventions want;
/// label names do not start with `__` (reserved).
pub fn names_follow_conventions(exposition: &Exposition) -> anyhow::Result<()> {
    let snake = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    for family in exposition.families.values() {
        ensure!(snake(&family.name), "family name {:?}", family.name);
        for sample in &family.samples {
            ensure!(snake(&sample.name), "sample name {:?}", sample.name);
            for label in sample.labels.keys() {
                ensure!(
                    snake(label) && !label.starts_with("__"),
                    "label name {label:?} of {}",
                    sample.name
                );
            }
        }
    }
    Ok(())
}

/// Counters end in `_total`; nothing else does; no counter is negative.
pub fn counters_end_in_total(exposition: &Exposition) -> anyhow::Result<()> {
    for family in exposition.families.values() {
        let counter = family.kind == Some(Kind::Counter);
        ensure!(
            counter == family.name.ends_with("_total"),
            "{} is a {:?} but its name {} in _total",
            family.name,
            family.kind,
            if counter { "does not end" } else { "ends" }
        );
        if counter {
            for sample in &family.samples {
                ensure!(sample.value >= 0.0, "{} is negative", sample.name);
            }
        }
    }
    Ok(())
}

/// Names with a unit say it last, in base units (seconds, bytes), never ms or kb.
pub fn units_are_base_units(exposition: &Exposition) -> anyhow::Result<()> {
    for name in exposition.families.keys() {
        for bad in [
            "_ms",
            "_milliseconds",
            "_kb",
            "_mb",
            "_kilobytes",
            "_megabytes",
        ] {
            ensure!(
                !name.trim_end_matches("_total").ends_with(bad),
                "{name} is not in base units"
            );
        }
    }
    Ok(())
}

/// One histogram series: its buckets (upper bound, cumulative count), `_sum` and `_count`.
type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);

/// Each histogram series has buckets with increasing bounds ending at +Inf, cumulative counts
/// that never decrease, a `_sum` and a `_count` equal to the +Inf bucket.
pub fn histograms_are_complete(exposition: &Exposition) -> anyhow::Result<()> {
    for family in exposition.families.values() {
        if family.kind != Some(Kind::Histogram) {
            continue;
        }
        // A series is the labels other than `le`.
        let mut series: BTreeMap<BTreeMap<String, String>, Series> = BTreeMap::new();
        for sample in &family.samples {
            let mut labels = sample.labels.clone();
            let le = labels.remove("le");
            let entry = series.entry(labels).or_default();
            match sample.name.strip_prefix(family.name.as_str()) {
                Some("_bucket") => {
                    let le = le.with_context(|| format!("{} bucket without le", family.name))?;
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse()
                            .with_context(|| format!("{} le {le:?}", family.name))?
                    };
                    entry.0.push((bound, sample.value));
                }
                Some("_sum") => entry.1 = Some(sample.value),
                Some("_count") => entry.2 = Some(sample.value),
                _ => bail!("{} in histogram {}", sample.name, family.name),
            }
        }
        ensure!(
            !series.is_empty(),
            "histogram {} has no series",
            family.name
        );
        for (labels, (buckets, sum, count)) in series {
            let what = format!("{}{labels:?}", family.name);
            ensure!(!buckets.is_empty(), "{what}: no buckets");
            ensure!(sum.is_some(), "{what}: no _sum");
            let count = count.with_context(|| format!("{what}: no _count"))?;
            for pair in buckets.windows(2) {
                ensure!(pair[0].0 < pair[1].0, "{what}: bounds not increasing");
                ensure!(pair[0].1 <= pair[1].1, "{what}: counts not cumulative");
            }
            let last = buckets.last().expect("not empty");
            ensure!(last.0.is_infinite(), "{what}: no +Inf bucket");
            ensure!(
                last.1 == count,
                "{what}: +Inf bucket {} != count {count}",
                last.1
            );
        }
    }
    Ok(())
}

/// Every property above.
pub fn check_all(exposition: &Exposition) -> anyhow::Result<()> {
    every_family_has_help_and_type(exposition)?;
    names_follow_conventions(exposition)?;
    counters_end_in_total(exposition)?;
    units_are_base_units(exposition)?;
    histograms_are_complete(exposition)
}

#[test]
fn the_parser_and_properties_catch_broken_expositions() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
                # HELP h_seconds H.\n# TYPE h_seconds histogram\n\
                h_seconds_bucket{le=\"0.1\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n\
                h_seconds_sum 0.3\nh_seconds_count 2\n";
    let exposition = parse(good).unwrap();
    check_all(&exposition).unwrap();
    assert_eq!(exposition.value("a_total", &[("x", "1")]).unwrap(), 3.0);

    let no_help = parse("# TYPE b gauge\nb 1\n").unwrap();
    assert!(every_family_has_help_and_type(&no_help).is_err());
    let counter_name = parse("# HELP c C.\n# TYPE c counter\nc 1\n").unwrap();
    assert!(counters_end_in_total(&counter_name).is_err());
    let camel = parse("# HELP Camel C.\n# TYPE Camel gauge\nCamel 1\n").unwrap();
    assert!(names_follow_conventions(&camel).is_err());
    let millis = parse("# HELP d_ms D.\n# TYPE d_ms gauge\nd_ms 1\n").unwrap();
    assert!(units_are_base_units(&millis).is_err());
    let short = parse(
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    )
    .unwrap();
    assert!(histograms_are_complete(&short).is_err());
    let no_inf =
        parse("# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n")
            .unwrap();
    assert!(histograms_are_complete(&no_inf).is_err());
    let escaped = parse("# HELP e E.\n# TYPE e gauge\ne{q=\"a\\\"b,c\"} 1\n").unwrap();
    assert_eq!(escaped.value("e", &[("q", "a\"b,c")]).unwrap(), 1.0);
}
