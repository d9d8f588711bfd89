//! The Workflows service (workflows.proto): validate the definition by the shared rules, convert it
//! (step names resolved to indexes, defaults filled in), write or forward; reads from the local
//! state after a ReadIndex; the watch follows the event ring (`streams.rs`).

use std::collections::BTreeMap;

use conclave_proto::limits::{DEFAULT_ATTEMPTS, DEFAULT_LEASE_MS};
use conclave_proto::v1 as pb;
use conclave_proto::v1::workflows_client::WorkflowsClient;
use conclave_proto::v1::workflows_server::Workflows as WorkflowsApi;
use conclave_proto::validate;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::gateway::{bounded_page, invalid, read_consistency, request_id, unexpected, Gateway};
use super::status::to_status;
use super::streams::{self, EventStream};
use super::validation::{self, non_zero, rule};
use crate::error::Error;
use crate::limits::{MAX_REQUEST_BYTES, WORKFLOW_LIST_SCAN_MAX, WORKFLOW_RESPONSE_BYTES_MAX};
use crate::state_machine::coordination::{Electorate, Rule};
use crate::state_machine::workflows::definition::{
    DecisionTemplate, FanOut, FanOutSource, JoinPolicy, StepDef, StepKind, TaskTemplate, When,
};
use crate::state_machine::workflows::{
    BranchState, Definition, StepState, Workflow, WorkflowEvent, WorkflowEventKind, WorkflowState,
};
use crate::state_machine::{Command, Response as SmResponse, StateMachine};
use crate::state_machine::{WorkflowCommand, WorkflowResponse};

pub struct WorkflowsService {
    gateway: Gateway,
}

impl WorkflowsService {
    pub fn new(gateway: Gateway) -> Self {
        WorkflowsService { gateway }
    }
}

fn client(channel: Channel) -> WorkflowsClient<Channel> {
    WorkflowsClient::new(channel)
        .max_decoding_message_size(WORKFLOW_RESPONSE_BYTES_MAX)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

/// A definition from the wire, checked by `validate::workflow` (INVALID_ARGUMENT naming the step
/// and the field), with step names resolved to indexes and the defaults filled in: attempts 3,
/// lease 30 s, the backoff's defaults in whole thousandths, no params "null".
pub fn definition(given: &pb::WorkflowDefinition) -> Result<Definition, Status> {
    rule(validate::workflow::definition(given))?;
    let index: BTreeMap<&str, u32> = given
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| (step.name.as_str(), i as u32))
        .collect();
    // The validator checked that every name refers to a step.
    let resolve = |at: &str, name: &str| {
        index
            .get(name)
            .copied()
            .ok_or_else(|| invalid(format!("{at}: {name:?} is not a step")))
    };
    let mut steps = Vec::with_capacity(given.steps.len());
    for (i, step) in given.steps.iter().enumerate() {
        let at = format!("steps[{i}] ({})", step.name);
        let after = step
            .after
            .iter()
            .map(|name| resolve(&format!("{at}.after"), name))
            .collect::<Result<Vec<u32>, Status>>()?;
        let when = match &step.when {
            Some(condition) => Some(When {
                step: resolve(&format!("{at}.when.step"), &condition.step)?,
                outcome: condition.outcome.clone(),
            }),
            None => None,
        };
        let kind = match &step.kind {
            Some(pb::workflow_step::Kind::Task(task)) => StepKind::Task {
                template: task_template(&format!("{at}.task"), task)?,
                fan_out: match &step.fan_out {
                    Some(fan_out) => Some(self::fan_out(&at, fan_out, &resolve)?),
                    None => None,
                },
            },
            Some(pb::workflow_step::Kind::Decision(decision)) => {
                StepKind::Decision(decision_template(&format!("{at}.decision"), decision)?)
            }
            None => return Err(invalid(format!("{at}: give the step a task or a decision"))),
        };
        let compensate = match step.compensate.as_str() {
            "" => None,
            name => Some(resolve(&format!("{at}.compensate"), name)?),
        };
        steps.push(StepDef {
            name: step.name.clone(),
            after,
            when,
            kind,
            compensate,
            compensation: step.compensation,
        });
    }
    Ok(Definition {
        name: given.name.clone(),
        version: given.version,
        deadline_ms: given.deadline_ms,
        steps,
    })
}

fn task_template(at: &str, task: &pb::TaskTemplate) -> Result<TaskTemplate, Status> {
    Ok(TaskTemplate {
        queue: task.queue.clone(),
        capabilities: validation::capabilities(&format!("{at}.capabilities"), &task.capabilities)?,
        params: if task.params_json.is_empty() {
            "null".to_string()
        } else {
            task.params_json.clone()
        },
        priority: task.priority,
        max_attempts: match task.max_attempts {
            0 => DEFAULT_ATTEMPTS,
            n => n,
        },
        backoff: validation::backoff(&format!("{at}.backoff"), task.backoff.as_ref())?,
        lease_ms: match task.lease_ms {
            0 => DEFAULT_LEASE_MS,
            ms => ms,
        },
        deadline_ms: task.deadline_ms,
        labels: validation::task_labels(&format!("{at}.labels"), &task.labels)?,
    })
}

fn fan_out(
    at: &str,
    fan_out: &pb::FanOut,
    resolve: &impl Fn(&str, &str) -> Result<u32, Status>,
) -> Result<FanOut, Status> {
    let source = match &fan_out.source {
        Some(pb::fan_out::Source::Count(n)) => FanOutSource::Count(*n),
        Some(pb::fan_out::Source::Over(name)) => {
            FanOutSource::Over(resolve(&format!("{at}.fan_out.over"), name)?)
        }
        None => return Err(invalid(format!("{at}.fan_out: give `over` or `count`"))),
    };
    let join = fan_out.join.unwrap_or_default();
    let policy = match pb::JoinPolicy::try_from(join.policy) {
        Ok(pb::JoinPolicy::All) => JoinPolicy::All,
        Ok(pb::JoinPolicy::Any) => JoinPolicy::Any,
        Ok(pb::JoinPolicy::AtLeast) => JoinPolicy::AtLeast(join.k),
        Err(_) => {
            return Err(invalid(format!(
                "{at}.fan_out.join.policy: unknown value {}",
                join.policy
            )))
        }
    };
    Ok(FanOut {
        source,
        policy,
        join_deadline_ms: join.deadline_ms,
    })
}

fn decision_template(
    at: &str,
    decision: &pb::DecisionTemplate,
) -> Result<DecisionTemplate, Status> {
    let electorate = decision.electorate.clone().unwrap_or_default();
    let rule = match pb::DecisionRule::try_from(decision.rule) {
        Ok(pb::DecisionRule::Majority) => Rule::Majority,
        Ok(pb::DecisionRule::Unanimous) => Rule::Unanimous,
        Ok(pb::DecisionRule::Weighted) => Rule::Weighted,
        Ok(pb::DecisionRule::AtLeast) => Rule::AtLeast(decision.k),
        Err(_) => {
            return Err(invalid(format!(
                "{at}.rule: unknown value {}",
                decision.rule
            )))
        }
    };
    Ok(DecisionTemplate {
        question: decision.question.clone(),
        options: decision.options.clone(),
        electorate: Electorate {
            agents: electorate.agents,
            capability: electorate.capability,
        },
        rule,
        weights: decision.weights.clone().into_iter().collect(),
        veto_option: match decision.veto_option.as_str() {
            "" => None,
            option => Some(option.to_string()),
        },
        deadline_ms: decision.deadline_ms,
        labels: validation::labels(&format!("{at}.labels"), &decision.labels)?,
    })
}

pub fn workflow_state(state: WorkflowState) -> pb::WorkflowState {
    match state {
        WorkflowState::Running => pb::WorkflowState::Running,
        WorkflowState::Waiting => pb::WorkflowState::Waiting,
        WorkflowState::Compensating => pb::WorkflowState::Compensating,
        WorkflowState::Succeeded => pb::WorkflowState::Succeeded,
        WorkflowState::Failed => pb::WorkflowState::Failed,
        WorkflowState::Canceled => pb::WorkflowState::Canceled,
        WorkflowState::TimedOut => pb::WorkflowState::TimedOut,
    }
}

fn workflow_state_from(state: pb::WorkflowState) -> Option<WorkflowState> {
    Some(match state {
        pb::WorkflowState::Unspecified => return None,
        pb::WorkflowState::Running => WorkflowState::Running,
        pb::WorkflowState::Waiting => WorkflowState::Waiting,
        pb::WorkflowState::Compensating => WorkflowState::Compensating,
        pb::WorkflowState::Succeeded => WorkflowState::Succeeded,
        pb::WorkflowState::Failed => WorkflowState::Failed,
        pb::WorkflowState::Canceled => WorkflowState::Canceled,
        pb::WorkflowState::TimedOut => WorkflowState::TimedOut,
    })
}

fn step_state(state: StepState) -> pb::WorkflowStepState {
    match state {
        StepState::Waiting => pb::WorkflowStepState::Waiting,
        StepState::Running => pb::WorkflowStepState::Running,
        StepState::Succeeded => pb::WorkflowStepState::Succeeded,
        StepState::Failed => pb::WorkflowStepState::Failed,
        StepState::Skipped => pb::WorkflowStepState::Skipped,
        StepState::Canceled => pb::WorkflowStepState::Canceled,
        StepState::TimedOut => pb::WorkflowStepState::TimedOut,
    }
}

fn branch_state(state: BranchState) -> pb::WorkflowBranchState {
    match state {
        BranchState::Pending => pb::WorkflowBranchState::Pending,
        BranchState::Running => pb::WorkflowBranchState::Running,
        BranchState::Succeeded => pb::WorkflowBranchState::Succeeded,
        BranchState::Failed => pb::WorkflowBranchState::Failed,
        BranchState::Canceled => pb::WorkflowBranchState::Canceled,
        BranchState::TimedOut => pb::WorkflowBranchState::TimedOut,
    }
}

pub fn event_kind(kind: WorkflowEventKind) -> pb::WorkflowEventKind {
    match kind {
        WorkflowEventKind::Started => pb::WorkflowEventKind::StartedWorkflow,
        WorkflowEventKind::StepStarted => pb::WorkflowEventKind::StepStarted,
        WorkflowEventKind::StepSucceeded => pb::WorkflowEventKind::StepSucceeded,
        WorkflowEventKind::StepFailed => pb::WorkflowEventKind::StepFailed,
        WorkflowEventKind::StepSkipped => pb::WorkflowEventKind::StepSkipped,
        WorkflowEventKind::StepCanceled => pb::WorkflowEventKind::StepCanceled,
        WorkflowEventKind::StepTimedOut => pb::WorkflowEventKind::StepTimedOut,
        WorkflowEventKind::Joined => pb::WorkflowEventKind::Joined,
        WorkflowEventKind::Waiting => pb::WorkflowEventKind::Waiting,
        WorkflowEventKind::Compensating => pb::WorkflowEventKind::Compensating,
        WorkflowEventKind::Finished => pb::WorkflowEventKind::Finished,
        WorkflowEventKind::Retried => pb::WorkflowEventKind::Retried,
    }
}

/// One change as a watch sends it.
pub fn event(sequence: u64, event: &WorkflowEvent) -> pb::WorkflowEvent {
    pb::WorkflowEvent {
        sequence,
        kind: event_kind(event.kind) as i32,
        workflow_id: event.workflow_id,
        step: event.step.clone(),
        state: workflow_state(event.state) as i32,
        reason: event.reason.clone(),
    }
}

/// The name of the step a task runs, when this node still keeps its workflow.
pub fn step_name(machine: &StateMachine, origin: &pb::WorkflowOrigin) -> String {
    machine
        .workflows()
        .get(origin.workflow_id)
        .and_then(|w| w.definition.steps.get(origin.step as usize))
        .map(|step| step.name.clone())
        .unwrap_or_default()
}

/// An instance as the API shows it. `summary` leaves the input, the results and the definition
/// out (listings).
pub fn workflow(workflow: &Workflow, summary: bool) -> pb::Workflow {
    let text = |s: &String| if summary { String::new() } else { s.clone() };
    let steps = &workflow.definition.steps;
    let name_of = |i: u32| {
        steps
            .get(i as usize)
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    pb::Workflow {
        id: workflow.id,
        name: workflow.definition.name.clone(),
        version: workflow.definition.version,
        state: workflow_state(workflow.state) as i32,
        input_json: text(&workflow.input),
        steps: workflow
            .steps
            .iter()
            .zip(steps)
            .map(|(run, def)| pb::WorkflowStepRun {
                name: def.name.clone(),
                state: step_state(run.state) as i32,
                branches: run
                    .branches
                    .iter()
                    .map(|b| pb::WorkflowBranch {
                        task_id: b.task_id,
                        state: branch_state(b.state) as i32,
                        item_json: text(&b.item),
                        result_json: text(&b.result),
                        error: b.error.clone(),
                    })
                    .collect(),
                decision_id: run.decision_id,
                outcome: run.outcome.clone(),
                started_unix_ms: run.started_ms,
                finished_unix_ms: run.finished_ms,
                result_json: text(&run.result),
                error: run.error.clone(),
                runs: run.runs,
                compensated: run.compensated,
            })
            .collect(),
        compensations: workflow
            .compensations
            .iter()
            .map(|c| pb::WorkflowCompensation {
                step: name_of(c.step),
                compensation: name_of(c.compensation),
                task_id: c.task_id,
                state: branch_state(c.state) as i32,
                error: c.error.clone(),
            })
            .collect(),
        created_unix_ms: workflow.created_ms,
        updated_unix_ms: workflow.updated_ms,
        finished_unix_ms: workflow.finished_ms,
        deadline_unix_ms: workflow.deadline_ms,
        error: workflow.error.clone(),
        idempotency_key: workflow.idempotency_key.clone(),
        retries: workflow.retries,
        definition: None,
    }
}

/// A workflow write's success (refusals are already errors: `error::refused`).
/// The checked parts of a Start (here and a transaction's start op): the definition converted,
/// with `deadline_ms` (relative to the start) in place of its own when not 0; the input and the
/// idempotency key checked.
pub fn start_definition(
    given: Option<&pb::WorkflowDefinition>,
    input_json: &str,
    idempotency_key: &str,
    deadline_ms: u64,
) -> Result<Definition, Status> {
    let given = given.ok_or_else(|| invalid("definition: required"))?;
    let mut definition = definition(given)?;
    rule(validate::workflow::input_json("input_json", input_json))?;
    rule(validate::id_string("idempotency_key", idempotency_key))?;
    if deadline_ms != 0 {
        // Relative to the start, like the definition's: the leader's apply makes it absolute.
        let mut with_deadline = given.clone();
        with_deadline.deadline_ms = deadline_ms;
        rule(validate::workflow::definition(&with_deadline))
            .map_err(|_| invalid(format!("deadline_ms: {deadline_ms} is out of range")))?;
        definition.deadline_ms = deadline_ms;
    }
    Ok(definition)
}

fn answer(response: SmResponse) -> Result<(u64, WorkflowResponse), Status> {
    match response {
        SmResponse::Workflows { revision, response } => Ok((revision, response)),
        other => Err(unexpected(other)),
    }
}

#[tonic::async_trait]
impl WorkflowsApi for WorkflowsService {
    async fn start(
        &self,
        request: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        let traceparent = validation::traceparent_metadata(request.metadata())?;
        let (forwarded, mut req) = self.gateway.accept(request)?;
        if let (Some(traceparent), Some(definition)) = (&traceparent, req.definition.as_mut()) {
            // Every task step's tasks (its branches and its retries too) carry the trace, as a
            // label of the step's template: the definition is in the request body, so it
            // survives forwarding, and in the log as it always was.
            for step in &mut definition.steps {
                if let Some(pb::workflow_step::Kind::Task(template)) = step.kind.as_mut() {
                    template.labels.insert(
                        conclave_proto::TRACEPARENT_LABEL.to_string(),
                        traceparent.clone(),
                    );
                }
            }
        }
        let request_id = request_id(req.request_id)?;
        let definition = start_definition(
            req.definition.as_ref(),
            &req.input_json,
            &req.idempotency_key,
            req.deadline_ms,
        )?;
        let command = Command::Workflows(WorkflowCommand::Start {
            definition,
            input: req.input_json.clone(),
            idempotency_key: req.idempotency_key.clone(),
            deadline_ms: 0,
        });
        let gateway = &self.gateway;
        gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                |response| match answer(response)? {
                    (
                        revision,
                        WorkflowResponse::Started {
                            workflow_id,
                            existing,
                        },
                    ) => Ok(Response::new(pb::StartWorkflowResponse {
                        header: gateway.header(revision, crate::node::Consistency::Linearizable),
                        workflow_id,
                        existed: existing,
                    })),
                    (_, other) => Err(to_status(Error::Fatal(format!(
                        "a workflow start was answered {other:?}"
                    )))),
                },
                |c, r| async move { client(c).start(r).await },
            )
            .await
    }

    async fn get(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        non_zero("workflow_id", req.workflow_id)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(
                    e,
                    forwarded,
                    req,
                    |c, r| async move { client(c).get(r).await },
                )
                .await;
        }
        let state = self.gateway.node.state.read();
        let found = state
            .machine
            .workflows()
            .get(req.workflow_id)
            .ok_or_else(|| to_status(Error::unknown_workflow(req.workflow_id)))?;
        let mut workflow = workflow(found, false);
        workflow.definition = Some(definition_to_pb(&found.definition));
        Ok(Response::new(pb::GetWorkflowResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            workflow: Some(workflow),
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        validation::optional_name("name", &req.name)?;
        let limit = validation::page_limit(req.limit)?;
        let mut states = Vec::with_capacity(req.states.len());
        for &value in &req.states {
            let state = pb::WorkflowState::try_from(value)
                .ok()
                .and_then(workflow_state_from)
                .ok_or_else(|| invalid(format!("states: unknown value {value}")))?;
            states.push(state);
        }
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(
                    e,
                    forwarded,
                    req,
                    |c, r| async move { client(c).list(r).await },
                )
                .await;
        }
        let state = self.gateway.node.state.read();
        // Examine at most WORKFLOW_LIST_SCAN_MAX instances, so no listing holds the state long.
        let (examined, mut more) = state
            .machine
            .workflows()
            .list(req.after_id, WORKFLOW_LIST_SCAN_MAX);
        let mut next_after_id = req.after_id;
        let mut page = Vec::new();
        for found in examined {
            if page.len() == limit {
                more = true;
                break;
            }
            next_after_id = found.id;
            let wanted = (states.is_empty() || states.contains(&found.state))
                && (req.name.is_empty() || found.definition.name == req.name);
            if wanted {
                page.push(workflow(found, true));
            }
        }
        let kept = page.len();
        let (workflows, more) = bounded_page(page.into_iter(), more);
        if workflows.len() < kept {
            // Cut by the response size: continue after the last one sent.
            next_after_id = workflows.last().map_or(req.after_id, |w| w.id);
        }
        Ok(Response::new(pb::ListWorkflowsResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            workflows,
            more,
            next_after_id,
        }))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::CancelWorkflowResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        non_zero("workflow_id", req.workflow_id)?;
        validation::message("reason", &req.reason)?;
        let command = Command::Workflows(WorkflowCommand::Cancel {
            workflow_id: req.workflow_id,
            reason: req.reason.clone(),
        });
        let gateway = &self.gateway;
        gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                |response| match answer(response)? {
                    (revision, WorkflowResponse::Canceled { canceled, state }) => {
                        Ok(Response::new(pb::CancelWorkflowResponse {
                            header: gateway
                                .header(revision, crate::node::Consistency::Linearizable),
                            canceled,
                            state: workflow_state(state) as i32,
                        }))
                    }
                    (_, other) => Err(to_status(Error::Fatal(format!(
                        "a workflow cancel was answered {other:?}"
                    )))),
                },
                |c, r| async move { client(c).cancel(r).await },
            )
            .await
    }

    async fn retry(
        &self,
        request: Request<pb::RetryWorkflowRequest>,
    ) -> Result<Response<pb::RetryWorkflowResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        non_zero("workflow_id", req.workflow_id)?;
        let command = Command::Workflows(WorkflowCommand::Retry {
            workflow_id: req.workflow_id,
        });
        let gateway = &self.gateway;
        gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                |response| match answer(response)? {
                    (revision, WorkflowResponse::Retried { state }) => {
                        Ok(Response::new(pb::RetryWorkflowResponse {
                            header: gateway
                                .header(revision, crate::node::Consistency::Linearizable),
                            state: workflow_state(state) as i32,
                        }))
                    }
                    (_, other) => Err(to_status(Error::Fatal(format!(
                        "a workflow retry was answered {other:?}"
                    )))),
                },
                |c, r| async move { client(c).retry(r).await },
            )
            .await
    }

    type WatchStream = EventStream<pb::WorkflowEvent>;

    async fn watch(
        &self,
        request: Request<pb::WatchWorkflowsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            streams::watch_workflows(&self.gateway, req).await?,
        ))
    }
}

/// The stored definition back on the wire (indexes as names, defaults as filled in).
pub(crate) fn definition_to_pb(definition: &Definition) -> pb::WorkflowDefinition {
    let name_of = |i: u32| definition.steps[i as usize].name.clone();
    pb::WorkflowDefinition {
        name: definition.name.clone(),
        version: definition.version,
        deadline_ms: definition.deadline_ms,
        steps: definition
            .steps
            .iter()
            .map(|step| {
                let (kind, fan_out) = match &step.kind {
                    StepKind::Task { template, fan_out } => (
                        pb::workflow_step::Kind::Task(pb::TaskTemplate {
                            queue: template.queue.clone(),
                            capabilities: template.capabilities.iter().cloned().collect(),
                            params_json: template.params.clone(),
                            priority: template.priority,
                            max_attempts: template.max_attempts,
                            backoff: Some(pb::Backoff {
                                initial_ms: template.backoff.initial_ms,
                                maximum_ms: template.backoff.maximum_ms,
                                multiplier: f64::from(template.backoff.multiplier_permille)
                                    / 1000.0,
                                jitter: f64::from(template.backoff.jitter_permille) / 1000.0,
                            }),
                            lease_ms: template.lease_ms,
                            deadline_ms: template.deadline_ms,
                            labels: template.labels.clone().into_iter().collect(),
                        }),
                        fan_out.as_ref().map(|f| pb::FanOut {
                            source: Some(match f.source {
                                FanOutSource::Count(n) => pb::fan_out::Source::Count(n),
                                FanOutSource::Over(j) => pb::fan_out::Source::Over(name_of(j)),
                            }),
                            join: Some(pb::Join {
                                policy: match f.policy {
                                    JoinPolicy::All => pb::JoinPolicy::All,
                                    JoinPolicy::Any => pb::JoinPolicy::Any,
                                    JoinPolicy::AtLeast(_) => pb::JoinPolicy::AtLeast,
                                } as i32,
                                k: match f.policy {
                                    JoinPolicy::AtLeast(k) => k,
                                    _ => 0,
                                },
                                deadline_ms: f.join_deadline_ms,
                            }),
                        }),
                    ),
                    StepKind::Decision(d) => (
                        pb::workflow_step::Kind::Decision(pb::DecisionTemplate {
                            question: d.question.clone(),
                            options: d.options.clone(),
                            electorate: Some(pb::Electorate {
                                agents: d.electorate.agents.clone(),
                                capability: d.electorate.capability.clone(),
                            }),
                            rule: match d.rule {
                                Rule::Majority => pb::DecisionRule::Majority,
                                Rule::Unanimous => pb::DecisionRule::Unanimous,
                                Rule::Weighted => pb::DecisionRule::Weighted,
                                Rule::AtLeast(_) => pb::DecisionRule::AtLeast,
                            } as i32,
                            k: match d.rule {
                                Rule::AtLeast(k) => k,
                                _ => 0,
                            },
                            weights: d.weights.clone().into_iter().collect(),
                            veto_option: d.veto_option.clone().unwrap_or_default(),
                            deadline_ms: d.deadline_ms,
                            labels: d.labels.clone().into_iter().collect(),
                        }),
                        None,
                    ),
                };
                pb::WorkflowStep {
                    name: step.name.clone(),
                    after: step.after.iter().map(|&j| name_of(j)).collect(),
                    when: step.when.as_ref().map(|w| pb::StepCondition {
                        step: name_of(w.step),
                        outcome: w.outcome.clone(),
                    }),
                    kind: Some(kind),
                    fan_out,
                    compensate: step.compensate.map(name_of).unwrap_or_default(),
                    compensation: step.compensation,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_step(name: &str, after: &[&str]) -> pb::WorkflowStep {
        pb::WorkflowStep {
            name: name.into(),
            after: after.iter().map(|s| s.to_string()).collect(),
            kind: Some(pb::workflow_step::Kind::Task(pb::TaskTemplate {
                queue: "q".into(),
                ..pb::TaskTemplate::default()
            })),
            ..pb::WorkflowStep::default()
        }
    }

    #[test]
    fn names_become_indexes_and_defaults_are_filled_in() {
        let mut fan = task_step("fan", &["plan"]);
        fan.fan_out = Some(pb::FanOut {
            source: Some(pb::fan_out::Source::Over("plan".into())),
            join: Some(pb::Join {
                policy: pb::JoinPolicy::AtLeast as i32,
                k: 2,
                deadline_ms: 60_000,
            }),
        });
        fan.compensate = "undo".into();
        let mut undo = task_step("undo", &[]);
        undo.compensation = true;
        let given = pb::WorkflowDefinition {
            name: "w".into(),
            version: 2,
            deadline_ms: 0,
            steps: vec![task_step("plan", &[]), fan, undo],
        };
        let converted = definition(&given).expect("a valid definition");
        assert!(converted.check_structure().is_ok());
        let fan = &converted.steps[1];
        assert_eq!(fan.after, vec![0]);
        assert_eq!(fan.compensate, Some(2));
        assert_eq!(
            fan.fan_out(),
            Some(&FanOut {
                source: FanOutSource::Over(0),
                policy: JoinPolicy::AtLeast(2),
                join_deadline_ms: 60_000,
            })
        );
        let StepKind::Task { template, .. } = &fan.kind else {
            panic!("a task step");
        };
        assert_eq!(template.max_attempts, DEFAULT_ATTEMPTS);
        assert_eq!(template.lease_ms, DEFAULT_LEASE_MS);
        assert_eq!(template.params, "null");
        assert_eq!(template.backoff.multiplier_permille, 2_000);
        // And back: the stored definition reads as the one given, defaults filled in.
        let back = definition_to_pb(&converted);
        assert_eq!(back.steps[1].after, vec!["plan".to_string()]);
        assert_eq!(back.steps[1].compensate, "undo");
    }

    #[test]
    fn a_broken_definition_names_the_step_and_the_field() {
        let given = pb::WorkflowDefinition {
            name: "w".into(),
            steps: vec![task_step("a", &["later"]), task_step("later", &[])],
            ..pb::WorkflowDefinition::default()
        };
        let status = definition(&given).expect_err("`after` names a later step");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("steps[0] (a).after"),
            "{}",
            status.message()
        );
    }
}
