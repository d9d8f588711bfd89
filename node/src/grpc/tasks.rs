//! The Tasks service: validate, convert, write through the leader or read (linearizable unless
//! asked otherwise), map the outcome. Writes and linearizable reads that reach a follower are
//! forwarded to the leader; watches are served by any node from its applied state.

use std::pin::Pin;
use std::time::Duration;

use conclave_proto::v1 as pb;
use conclave_proto::v1::tasks_client::TasksClient;
use conclave_proto::v1::tasks_server::Tasks;
use futures::Stream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::convert;
use super::gateway::{
    bounded_page, check_request_size, coordination, invalid, read_consistency, request_id,
    unexpected_coordination, Gateway,
};
use super::status::to_status;
use super::streams;
use super::validation::{self, non_zero};
use crate::error::Error;
use crate::limits::{DEFAULT_WAIT_MS, MAX_REQUEST_BYTES, MAX_WAIT_MS};
use crate::node::Consistency;
use crate::state_machine::coordination::{CoordCommand, CoordResponse, TaskFilter};
use crate::state_machine::{Command, StateMachine};

pub struct TasksService {
    gateway: Gateway,
}

impl TasksService {
    pub fn new(gateway: Gateway) -> Self {
        TasksService { gateway }
    }
}

/// The generated client, for forwarding, with the same message bounds as the server.
pub fn client(channel: Channel) -> TasksClient<Channel> {
    TasksClient::new(channel)
        .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

type WatchTasksStream = Pin<Box<dyn Stream<Item = Result<pb::TaskEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let traceparent = validation::traceparent_metadata(request.metadata())?;
        let (forwarded, mut req) = self.gateway.accept(request)?;
        if let (Some(traceparent), Some(spec)) = (&traceparent, req.task.as_mut()) {
            validation::set_traceparent(spec, traceparent);
        }
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        let spec = req.task.as_ref().ok_or_else(|| invalid("task: required"))?;
        let spec = validation::task_spec("task", spec)?;
        let command = Command::Coordination(CoordCommand::Submit { tasks: vec![spec] });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                coordination(|revision, response| match response {
                    CoordResponse::Submitted { results } => {
                        let (task_id, existing) = *results.first().ok_or_else(|| {
                            Status::internal("a submit of one task returned no result")
                        })?;
                        if let Some(traceparent) = &traceparent {
                            tracing::debug!(task_id, existing, traceparent, "task submitted");
                            crate::otel::mark("conclave.task.submitted", traceparent, task_id);
                        }
                        Ok(Response::new(pb::SubmitResponse {
                            header: self.gateway.header(revision, Consistency::Linearizable),
                            task_id,
                            existing,
                        }))
                    }
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| async move { client(c).submit(r).await },
            )
            .await
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let traceparent = validation::traceparent_metadata(request.metadata())?;
        let (forwarded, mut req) = self.gateway.accept(request)?;
        if let Some(traceparent) = &traceparent {
            for spec in &mut req.tasks {
                validation::set_traceparent(spec, traceparent);
            }
        }
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        let specs = validation::task_specs(&req.tasks)?;
        let command = Command::Coordination(CoordCommand::Submit { tasks: specs });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                coordination(|revision, response| match response {
                    CoordResponse::Submitted { results } => {
                        let header = self.gateway.header(revision, Consistency::Linearizable);
                        if let Some(traceparent) = &traceparent {
                            let task_ids: Vec<u64> = results.iter().map(|(id, _)| *id).collect();
                            tracing::debug!(?task_ids, traceparent, "tasks submitted");
                        }
                        Ok(Response::new(pb::SubmitBatchResponse {
                            header,
                            results: results
                                .into_iter()
                                .map(|(task_id, existing)| pb::SubmitResponse {
                                    header,
                                    task_id,
                                    existing,
                                })
                                .collect(),
                        }))
                    }
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| async move { client(c).submit_batch(r).await },
            )
            .await
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        non_zero("task_id", req.task_id)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).get_task(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let task = state
            .machine
            .tasks()
            .task(req.task_id)
            .ok_or_else(|| to_status(Error::unknown_task(req.task_id)))?;
        let task = named_origin(convert::task(task, false), &state.machine);
        Ok(Response::new(pb::GetTaskResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            task: Some(task),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        validation::optional_name("queue", &req.queue)?;
        let filter = TaskFilter {
            queue: req.queue.clone(),
            states: validation::task_states(&req.states)?,
            labels: validation::labels("labels", &req.labels)?,
            parent_id: req.parent_id,
        };
        let limit = validation::page_limit(req.limit)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).list_tasks(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let listing = state
            .machine
            .tasks()
            .list_tasks(&filter, req.after_id, limit);
        let (tasks, more) = bounded_page(
            listing
                .tasks
                .iter()
                .map(|t| named_origin(convert::task(t, req.summary), &state.machine)),
            listing.more,
        );
        // A page cut short by its size goes on after its last task.
        let next_after_id = if tasks.len() < listing.tasks.len() {
            tasks.last().map_or(req.after_id, |t| t.id)
        } else {
            listing.next_after_id
        };
        Ok(Response::new(pb::ListTasksResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            tasks,
            more,
            next_after_id,
        }))
    }

    type WatchTasksStream = WatchTasksStream;

    async fn watch_tasks(
        &self,
        request: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        let req = request.into_inner();
        if req.task_id == 0 {
            validation::optional_name("queue", &req.queue)?;
        }
        if req.initial_state && req.after_sequence.is_some() {
            return Err(invalid(
                "after_sequence, initial_state: give one or neither (a resume needs no snapshot)",
            ));
        }
        let stream = streams::watch_tasks(&self.gateway, req).await?;
        Ok(Response::new(stream))
    }

    async fn wait_task(
        &self,
        request: Request<pb::WaitTaskRequest>,
    ) -> Result<Response<pb::WaitTaskResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        non_zero("task_id", req.task_id)?;
        let timeout_ms = match req.timeout_ms {
            0 => DEFAULT_WAIT_MS,
            ms if ms > MAX_WAIT_MS => {
                return Err(invalid(format!(
                    "timeout_ms: {ms} exceeds the limit of {MAX_WAIT_MS} (MAX_WAIT_MS)"
                )))
            }
            ms => ms,
        };
        let slot = self.gateway.watch_slot()?;
        if let Err(e) = self.gateway.linearize(Consistency::Linearizable).await {
            drop(slot);
            let wait = Duration::from_millis(timeout_ms) + 2 * self.gateway.node.leader_wait();
            return self
                .gateway
                .forward(e, forwarded, req, |c, mut r| async move {
                    // The leader holds the call for the whole wait.
                    r.set_timeout(wait);
                    client(c).wait_task(r).await
                })
                .await;
        }
        let (terminal, task, revision) = streams::wait_task(
            &self.gateway,
            req.task_id,
            Duration::from_millis(timeout_ms),
        )
        .await?;
        drop(slot);
        Ok(Response::new(pb::WaitTaskResponse {
            header: self.gateway.header(revision, Consistency::Linearizable),
            terminal,
            task: Some(task),
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        non_zero("task_id", req.task_id)?;
        validation::message("reason", &req.reason)?;
        let command = Command::Coordination(CoordCommand::Cancel {
            task_id: req.task_id,
            reason: req.reason.clone(),
        });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                coordination(|revision, response| match response {
                    CoordResponse::Canceled { canceled, previous } => {
                        Ok(Response::new(pb::CancelTaskResponse {
                            header: self.gateway.header(revision, Consistency::Linearizable),
                            canceled,
                            previous_state: convert::task_state(previous) as i32,
                        }))
                    }
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| async move { client(c).cancel_task(r).await },
            )
            .await
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        validation::optional_name("queue", &req.queue)?;
        let limit = validation::page_limit(req.limit)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).list_dead_letters(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let (tasks, more) = state
            .machine
            .tasks()
            .dead_letters(&req.queue, req.after_id, limit);
        let (tasks, more) = bounded_page(tasks.into_iter().map(|t| convert::task(t, false)), more);
        let next_after_id = tasks.last().map_or(req.after_id, |t| t.id);
        Ok(Response::new(pb::ListTasksResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            tasks,
            more,
            next_after_id,
        }))
    }

    async fn redrive(
        &self,
        request: Request<pb::RedriveRequest>,
    ) -> Result<Response<pb::DeadLetterResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        let selector = validation::dead_letter_selector(&req.task_ids, &req.queue)?;
        let command = Command::Coordination(CoordCommand::Redrive { selector });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                coordination(|revision, response| match response {
                    CoordResponse::DeadLetters { count } => {
                        Ok(Response::new(pb::DeadLetterResponse {
                            header: self.gateway.header(revision, Consistency::Linearizable),
                            count,
                        }))
                    }
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| async move { client(c).redrive(r).await },
            )
            .await
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::DeadLetterResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        let selector = validation::dead_letter_selector(&req.task_ids, &req.queue)?;
        let command = Command::Coordination(CoordCommand::Purge { selector });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                coordination(|revision, response| match response {
                    CoordResponse::DeadLetters { count } => {
                        Ok(Response::new(pb::DeadLetterResponse {
                            header: self.gateway.header(revision, Consistency::Linearizable),
                            count,
                        }))
                    }
                    other => Err(unexpected_coordination(other)),
                }),
                |c, r| async move { client(c).purge(r).await },
            )
            .await
    }
}

/// A task with its workflow origin's step name filled in, while the node keeps the workflow.
fn named_origin(mut task: pb::Task, machine: &StateMachine) -> pb::Task {
    if let Some(origin) = task.origin.as_mut() {
        origin.step_name = super::workflows::step_name(machine, origin);
    }
    task
}
