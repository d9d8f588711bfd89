//! Workflows (workflows.proto): definition files read into the wire's `WorkflowDefinition` and
//! checked by the rules the node applies. The calls (start, get, list, watch, cancel, retry)
//! come with the node's Workflows service.

mod definition;

pub use definition::{
    human_millis, load_definition, parse_definition, parse_millis, step_summaries, DefinitionFormat,
};
