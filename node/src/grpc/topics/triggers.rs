//! CreateTrigger, DeleteTrigger and ListTriggers (topics.proto): the wire side of the topics'
//! triggers (`state_machine/topics/triggers.rs`).

use conclave_proto::v1 as pb;
use conclave_proto::validate::topic as rules;
use tonic::{Request, Response, Status};

use super::{client, topic_answer, unexpected, TopicsService};
use crate::error::Error;
use crate::grpc::gateway::{invalid, read_consistency, request_id};
use crate::grpc::status::to_status;
use crate::grpc::validation::{self, name, rule};
use crate::grpc::workflows::{definition, definition_to_pb};
use crate::node::Consistency;
use crate::state_machine::topics::{TopicCommand, TopicResponse, Trigger, TriggerAction};
use crate::state_machine::Command;

/// The labels a trigger adds to each task it submits.
const TRIGGER_LABELS: usize = 4;

/// The trigger's action from the wire: the task template (checked like a Submit's spec, with
/// room for the trigger's labels) or the workflow definition.
fn action(trigger: &pb::Trigger) -> Result<TriggerAction, Status> {
    match &trigger.action {
        Some(pb::trigger::Action::Task(spec)) => {
            let max = conclave_proto::limits::MAX_LABELS - TRIGGER_LABELS;
            if spec.labels.len() > max {
                return Err(invalid(format!(
                    "trigger.task.labels: {} labels; a trigger's template takes at most {max} (MAX_LABELS less the {TRIGGER_LABELS} the trigger adds)",
                    spec.labels.len()
                )));
            }
            let spec = validation::task_spec("trigger.task", spec)?;
            Ok(TriggerAction::SubmitTask(Box::new(spec)))
        }
        Some(pb::trigger::Action::Workflow(given)) => {
            Ok(TriggerAction::StartWorkflow(Box::new(definition(given)?)))
        }
        None => Err(invalid("trigger.action: a task or a workflow is required")),
    }
}

pub(super) fn to_pb(trigger: &Trigger) -> pb::Trigger {
    let action = match &trigger.action {
        TriggerAction::SubmitTask(spec) => {
            pb::trigger::Action::Task(crate::grpc::convert::task_spec(spec, false))
        }
        TriggerAction::StartWorkflow(definition) => {
            pb::trigger::Action::Workflow(definition_to_pb(definition))
        }
    };
    pb::Trigger {
        name: trigger.name.clone(),
        subject: trigger.subject.clone(),
        action: Some(action),
        created_ms: trigger.created_ms,
        fired: trigger.fired,
        failed: trigger.failed,
        last_error: trigger.last_error.clone(),
    }
}

impl TopicsService {
    pub(super) async fn create_trigger_(
        &self,
        request: Request<pb::CreateTriggerRequest>,
    ) -> Result<Response<pb::CreateTriggerResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        rule(rules::topic_name("topic", &req.topic))?;
        let trigger = req
            .trigger
            .as_ref()
            .ok_or_else(|| invalid("trigger: required"))?;
        name("trigger.name", &trigger.name)?;
        rule(rules::pattern("trigger.subject", &trigger.subject))?;
        let command = Command::Topics(TopicCommand::CreateTrigger {
            topic: req.topic.clone(),
            name: trigger.name.clone(),
            subject: trigger.subject.clone(),
            action: action(trigger)?,
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::TriggerCreated { existing } => Ok(pb::CreateTriggerResponse {
                header: header(revision),
                existing,
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).create_trigger(r).await
            })
            .await
    }

    pub(super) async fn delete_trigger_(
        &self,
        request: Request<pb::DeleteTriggerRequest>,
    ) -> Result<Response<pb::DeleteTriggerResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let id = request_id(req.request_id)?;
        rule(rules::topic_name("topic", &req.topic))?;
        name("name", &req.name)?;
        let command = Command::Topics(TopicCommand::DeleteTrigger {
            topic: req.topic.clone(),
            name: req.name.clone(),
        });
        let header = |revision| self.gateway.header(revision, Consistency::Linearizable);
        let answer = topic_answer(|revision, response| match response {
            TopicResponse::TriggerDeleted => Ok(pb::DeleteTriggerResponse {
                header: header(revision),
            }),
            other => Err(unexpected(other)),
        });
        self.gateway
            .write_or_forward(forwarded, req, id, command, answer, |c, r| async move {
                client(c).delete_trigger(r).await
            })
            .await
    }

    pub(super) async fn list_triggers_(
        &self,
        request: Request<pb::ListTriggersRequest>,
    ) -> Result<Response<pb::ListTriggersResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        rule(rules::topic_name("topic", &req.topic))?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    client(c).list_triggers(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let topic = state.machine.topics().get(&req.topic).ok_or_else(|| {
            to_status(Error::NotFound(format!(
                "topic: topic {:?} does not exist",
                req.topic
            )))
        })?;
        Ok(Response::new(pb::ListTriggersResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            triggers: topic.triggers().map(to_pb).collect(),
        }))
    }
}
