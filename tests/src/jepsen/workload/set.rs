//! The set workload: clients add unique elements (one key each under a prefix) and now and then
//! read the whole set (a linearizable listing of the prefix); after healing, every node reads it.
//!
//! The checker (Jepsen's set-full, for a grow-only set):
//! - nothing appears that was never added, and nothing whose add provably failed;
//! - every acknowledged add is in every final read (nothing acknowledged is lost);
//! - once an element is known to be in the set (its add was acknowledged, or a read returned it),
//!   every read invoked later contains it: no read is stale, no element comes back from the dead.
//!
//! The set only grows, so a listing across several pages (each page consistent at its own
//! revision, each served after the listing began) still contains everything added before it was
//! invoked: the rules hold for multi-page reads too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::{ListRequest, PutRequest, ReadConsistency};
use futures::future::BoxFuture;
use rand::Rng as _;
use serde_json::{json, Value as Json};

use super::{CheckResult, Tasks, Verdict, Workload, FINAL_READ};
use crate::jepsen::client::{read_error, write_error, Client, ClientContext};
use crate::jepsen::history::{pair, Completion, Event, OpKind, OpSpec};

pub const NAME: &str = "set";
/// Every element's key starts with this.
pub const PREFIX: &str = "jepsen/set/e";
/// Fraction of a client's operations that read the whole set.
const READ_FRACTION: f64 = 0.04;
/// Keys per List page.
const PAGE: u32 = 1000;

pub struct SetWorkload {
    elements: Arc<AtomicU64>,
    tasks: Tasks,
    op_timeout: Mutex<Duration>,
}

impl SetWorkload {
    pub fn new() -> Self {
        Self {
            elements: Arc::new(AtomicU64::new(1)),
            tasks: Tasks::default(),
            op_timeout: Mutex::new(Duration::from_secs(5)),
        }
    }
}

impl Default for SetWorkload {
    fn default() -> Self {
        Self::new()
    }
}

impl Workload for SetWorkload {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self, context: ClientContext) {
        *self
            .op_timeout
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = context.op_timeout;
        for (number, node) in context.slots().into_iter().enumerate() {
            let context = context.clone();
            let elements = Arc::clone(&self.elements);
            self.tasks.push(tokio::spawn(async move {
                let mut rng = context.rng(number as u64);
                let mut client = Client::new(&context, node);
                while !context.pace(&mut rng).await {
                    if rng.gen_bool(READ_FRACTION) {
                        read(&mut client, &context, "read").await;
                    } else {
                        let element = elements.fetch_add(1, Ordering::Relaxed);
                        add(&mut client, &context, element).await;
                    }
                }
            }));
        }
    }

    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        let op_timeout = *self
            .op_timeout
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Box::pin(self.tasks.drain(op_timeout))
    }

    fn final_reads<'a>(&'a self, context: &'a ClientContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let readers = context.nodes.keys().map(|&node| async move {
                let mut client = Client::new(context, node);
                read(&mut client, context, FINAL_READ).await
            });
            futures::future::join_all(readers).await;
            Ok(())
        })
    }

    fn check(&self, events: &[Event], _budget: Duration) -> CheckResult {
        check(events)
    }
}

fn element_key(element: u64) -> String {
    format!("{PREFIX}{element:010}")
}

async fn add(client: &mut Client, context: &ClientContext, element: u64) {
    let request = PutRequest {
        request_id: client.next_request_id(),
        key: element_key(element).into_bytes(),
        value: element.to_string().into_bytes(),
        ..PutRequest::default()
    };
    let spec = OpSpec::new("add", None, json!(element));
    client
        .run(context, spec, |mut kv| async move {
            match kv.put(request).await {
                Ok(_) => Completion::Ok(json!(element)),
                Err(status) => write_error(&status),
            }
        })
        .await;
}

/// Lists the whole set; an element whose key or value does not parse is recorded as the text of
/// its key, which the checker reports as never added.
async fn read(client: &mut Client, context: &ClientContext, f: &str) {
    let spec = OpSpec::new(f, None, Json::Null);
    client
        .run(context, spec, |kv| async move {
            let mut elements: Vec<Json> = Vec::new();
            let mut start_after = Vec::new();
            loop {
                let request = ListRequest {
                    prefix: PREFIX.as_bytes().to_vec(),
                    limit: PAGE,
                    start_after: start_after.clone(),
                    consistency: ReadConsistency::Linearizable as i32,
                    keys_only: false,
                };
                let page = match kv.clone().list(request).await {
                    Ok(response) => response.into_inner(),
                    Err(status) => return read_error(&status),
                };
                for kv in &page.kvs {
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    let value = String::from_utf8_lossy(&kv.value).into_owned();
                    let element = key
                        .strip_prefix(PREFIX)
                        .and_then(|number| number.parse::<u64>().ok())
                        .filter(|element| value == element.to_string());
                    elements.push(
                        element.map_or_else(|| json!(format!("{key}={value}")), |e| json!(e)),
                    );
                }
                if !page.more {
                    return Completion::Ok(Json::Array(elements));
                }
                if page.next_start_after <= start_after {
                    return Completion::Fail("List did not advance".to_string());
                }
                start_after = page.next_start_after;
            }
        })
        .await;
}

/// Checks the set events of `events` (see the module comment).
pub fn check(events: &[Event]) -> CheckResult {
    let operations = match pair(events, Some(NAME)) {
        Ok(operations) => operations,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    // Element -> (outcome of its add, index of its acknowledgement).
    let mut adds: BTreeMap<u64, (OpKind, Option<u64>)> = BTreeMap::new();
    struct Read {
        invoke: u64,
        complete: u64,
        process: u64,
        node: Option<u64>,
        is_final: bool,
        elements: BTreeSet<u64>,
    }
    let mut reads: Vec<Read> = Vec::new();
    let mut problems = Vec::new();
    for operation in &operations {
        let invoke = operation.invoke;
        match invoke.f.as_str() {
            "add" => {
                let Some(element) = invoke.value.as_u64() else {
                    problems.push(format!("event {}: add of {}", invoke.index, invoke.value));
                    continue;
                };
                adds.insert(element, (operation.outcome(), operation.complete_index()));
            }
            "read" | FINAL_READ if operation.is_ok() => {
                let mut elements = BTreeSet::new();
                for item in operation.value().as_array().into_iter().flatten() {
                    match item.as_u64() {
                        Some(element) => {
                            elements.insert(element);
                        }
                        None => problems.push(format!(
                            "process {} read {item} at index {}, which no add wrote",
                            invoke.process,
                            operation.complete_index().unwrap_or(invoke.index)
                        )),
                    }
                }
                reads.push(Read {
                    invoke: invoke.index,
                    complete: operation.complete_index().expect("ok completes"),
                    process: invoke.process,
                    node: invoke.node,
                    is_final: invoke.f == FINAL_READ,
                    elements,
                });
            }
            _ => {}
        }
    }

    // Nothing unexpected: every element read was added, and not by an add that failed.
    let mut unexpected = BTreeSet::new();
    for read in &reads {
        for element in &read.elements {
            match adds.get(element) {
                None if unexpected.insert(*element) => problems.push(format!(
                    "element {element} was read (process {}, index {}) but never added",
                    read.process, read.complete
                )),
                Some((OpKind::Fail, _)) if unexpected.insert(*element) => problems.push(format!(
                    "element {element} was read (process {}, index {}) but its add failed, which \
                     promised it was not applied",
                    read.process, read.complete
                )),
                _ => {}
            }
        }
    }

    // When each element became known to be present: its acknowledgement or the first read of it.
    let mut known_since: BTreeMap<u64, u64> = BTreeMap::new();
    for (element, (outcome, complete)) in &adds {
        if let (OpKind::Ok, Some(index)) = (outcome, complete) {
            known_since.insert(*element, *index);
        }
    }
    for read in &reads {
        for element in &read.elements {
            let since = known_since.entry(*element).or_insert(read.complete);
            *since = (*since).min(read.complete);
        }
    }
    let mut known_order: Vec<(u64, u64)> =
        known_since.iter().map(|(e, since)| (*since, *e)).collect();
    known_order.sort_unstable();

    let finals: Vec<&Read> = reads.iter().filter(|read| read.is_final).collect();
    let mut lost = BTreeSet::new();
    let mut stale_reads = 0;
    for read in &reads {
        let missing: Vec<(u64, u64)> = known_order
            .iter()
            .take_while(|(since, _)| *since < read.invoke)
            .filter(|(_, element)| !read.elements.contains(element))
            .copied()
            .collect();
        if missing.is_empty() {
            continue;
        }
        if read.is_final {
            for (since, element) in &missing {
                if lost.insert(*element) {
                    let acknowledged = matches!(adds.get(element), Some((OpKind::Ok, _)));
                    problems.push(format!(
                        "element {element} ({}, known since index {since}) is missing from the \
                         final read on node {:?} (index {}): lost",
                        if acknowledged {
                            "acknowledged"
                        } else {
                            "read earlier"
                        },
                        read.node,
                        read.complete
                    ));
                }
            }
        } else {
            stale_reads += 1;
            let (since, element) = missing[0];
            problems.push(format!(
                "read by process {} on node {:?} (index {}..{}) misses {} element(s) known \
                 before it began, e.g. {element} known since index {since}",
                read.process,
                read.node,
                read.invoke,
                read.complete,
                missing.len()
            ));
        }
    }

    let count = |kind: OpKind| {
        adds.values()
            .filter(|(outcome, _)| *outcome == kind)
            .count()
    };
    let in_final = |element: &u64| finals.iter().all(|read| read.elements.contains(element));
    let info_present = adds
        .iter()
        .filter(|(element, (outcome, _))| *outcome == OpKind::Info && in_final(element))
        .count();
    let stats = json!({
        "adds": adds.len(),
        "adds_ok": count(OpKind::Ok),
        "adds_fail": count(OpKind::Fail),
        "adds_info": count(OpKind::Info),
        "adds_info_present_at_end": info_present,
        "reads": reads.len() - finals.len(),
        "final_reads": finals.len(),
        "final_size": finals.first().map_or(0, |read| read.elements.len()),
        "lost": lost.len(),
        "unexpected": unexpected.len(),
        "stale_reads": stale_reads,
    });
    if finals.is_empty() {
        let mut result = CheckResult::unknown(NAME, "no final read succeeded".to_string());
        result.stats = stats;
        if !problems.is_empty() {
            result.verdict = Verdict::Invalid;
            result.problems.extend(problems);
        }
        return result;
    }
    CheckResult::from_problems(NAME, problems, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jepsen::history::Script;

    fn add(script: Script, process: u64, element: u64) -> Script {
        script.invoke(process, "add", None, json!(element))
    }

    fn read(script: Script, process: u64, f: &str, elements: &[u64]) -> Script {
        script
            .invoke(process, f, None, Json::Null)
            .ok(process, json!(elements))
    }

    #[test]
    fn a_good_history_is_valid() {
        let script = add(Script::new(NAME), 1, 1).ok(1, json!(1));
        let script = add(script, 2, 2).info(2);
        let script = add(script, 3, 3).fail(3);
        let script = read(script, 4, "read", &[1]);
        let script = read(script, 4, FINAL_READ, &[1, 2]);
        let script = read(script, 5, FINAL_READ, &[1, 2]);
        let result = check(&script.events());
        assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
        assert_eq!(result.stats["adds_info_present_at_end"], 1);
    }

    #[test]
    fn a_lost_acknowledged_add_is_invalid() {
        let script = add(Script::new(NAME), 1, 1).ok(1, json!(1));
        let script = read(script, 4, FINAL_READ, &[1]);
        let script = read(script, 5, FINAL_READ, &[]);
        let result = check(&script.events());
        assert_eq!(result.verdict, Verdict::Invalid);
        assert!(result.problems[0].contains("lost"), "{:?}", result.problems);
    }

    #[test]
    fn elements_never_added_or_failed_are_invalid() {
        let script = add(Script::new(NAME), 1, 1).fail(1);
        let script = read(script, 4, FINAL_READ, &[1, 7]);
        let result = check(&script.events());
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.stats["unexpected"], 2, "{:?}", result.problems);
    }

    #[test]
    fn a_read_missing_an_element_known_before_it_began_is_invalid() {
        // Element 2's add is info, but a read saw it; a later read must see it too.
        let script = add(Script::new(NAME), 1, 2).info(1);
        let script = read(script, 2, "read", &[2]);
        let script = read(script, 3, "read", &[]);
        let script = read(script, 3, FINAL_READ, &[2]);
        let result = check(&script.events());
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.stats["stale_reads"], 1, "{:?}", result.problems);
    }

    #[test]
    fn a_read_concurrent_with_an_add_may_miss_it() {
        let script = Script::new(NAME)
            .invoke(1, "add", None, json!(1))
            .invoke(2, "read", None, Json::Null)
            .ok(1, json!(1))
            .ok(2, json!([]));
        let script = read(script, 2, FINAL_READ, &[1]);
        assert_eq!(check(&script.events()).verdict, Verdict::Valid);
    }

    #[test]
    fn without_a_final_read_the_check_is_unknown() {
        let script = add(Script::new(NAME), 1, 1).ok(1, json!(1));
        assert_eq!(check(&script.events()).verdict, Verdict::Unknown);
    }
}
