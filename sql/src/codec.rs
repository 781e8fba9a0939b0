//! A stage's plan as bytes: datafusion-proto for DataFusion's operators, and this codec for
//! Baton's exchange operators ([`ExchangeWriter`], [`ExchangeReader`]).
//!
//! The driver encodes with placeholder readers; a task decodes with its input edges, and each
//! reader is bound to the input that carries its edge.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use baton_fabric::EdgeId;
use baton_runtime::operator::EdgeSource;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_proto_converter,
};
use datafusion_proto::physical_plan::from_proto::{parse_physical_expr, parse_physical_expr_with_converter};
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;

use crate::exchange::{ExchangeReader, ExchangeWriter, Route};

/// One of Baton's nodes, as protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct Node {
    /// [`READER`] or [`WRITER`].
    #[prost(uint32, tag = "1")]
    kind: u32,
    /// A reader's edge.
    #[prost(uint32, tag = "2")]
    edge: u32,
    /// A reader's schema.
    #[prost(message, optional, tag = "3")]
    schema: Option<protobuf::Schema>,
    /// A reader's partitions, or a writer's.
    #[prost(uint64, tag = "4")]
    partitions: u64,
    /// Whether a reader's partition is one producer's output.
    #[prost(bool, tag = "5")]
    per_producer: bool,
    /// A writer's route: [`SINGLE`], [`HASH`] or [`ROUND_ROBIN`].
    #[prost(uint32, tag = "6")]
    route: u32,
    /// A hash route's key expressions, or the keys a reader's rows were hashed by.
    #[prost(message, repeated, tag = "7")]
    keys: Vec<protobuf::PhysicalExprNode>,
}

const READER: u32 = 1;
const WRITER: u32 = 2;
const SINGLE: u32 = 0;
const HASH: u32 = 1;
const ROUND_ROBIN: u32 = 2;

/// Encodes and decodes Baton's nodes; decoding binds readers to `sources`.
#[derive(Debug, Default)]
pub struct Codec {
    sources: Vec<EdgeSource>,
}

impl Codec {
    /// A codec that binds readers to the task's input edges.
    pub fn for_task(sources: Vec<EdgeSource>) -> Self {
        Self { sources }
    }
}

fn bad(what: impl Into<String>) -> DataFusionError {
    DataFusionError::Internal(format!("Baton's plan codec: {}", what.into()))
}

impl PhysicalExtensionCodec for Codec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let node = Node::decode(buf).map_err(|e| bad(format!("undecodable node: {e}")))?;
        match node.kind {
            READER => {
                let schema = node.schema.as_ref().ok_or_else(|| bad("a reader without a schema"))?;
                let schema = Arc::new(Schema::try_from(schema)?);
                let partitions =
                    usize::try_from(node.partitions).map_err(|_| bad(format!("{} partitions", node.partitions)))?;
                let keys = node
                    .keys
                    .iter()
                    .map(|k| parse_physical_expr(k, ctx, &schema, self))
                    .collect::<DfResult<Vec<_>>>()?;
                let reader = ExchangeReader::new(node.edge, schema, partitions, node.per_producer).hashed(keys);
                if self.sources.is_empty() {
                    return Ok(Arc::new(reader));
                }
                let source = self
                    .sources
                    .iter()
                    .find(|s| s.job_edge() == EdgeId(node.edge))
                    .ok_or_else(|| bad(format!("the task has no input edge-{}", node.edge)))?;
                Ok(Arc::new(reader.bound(source.clone())))
            }
            WRITER => {
                let [input] = inputs else { return Err(bad(format!("a writer with {} inputs", inputs.len()))) };
                let partitions =
                    usize::try_from(node.partitions).map_err(|_| bad(format!("{} partitions", node.partitions)))?;
                let route = match node.route {
                    SINGLE => Route::Single,
                    ROUND_ROBIN => Route::RoundRobin(partitions),
                    HASH => {
                        let schema = input.schema();
                        let keys = node
                            .keys
                            .iter()
                            .map(|k| parse_physical_expr(k, ctx, &schema, self))
                            .collect::<DfResult<Vec<_>>>()?;
                        Route::Hash(keys, partitions)
                    }
                    other => return Err(bad(format!("unknown route {other}"))),
                };
                Ok(Arc::new(ExchangeWriter::new(input.clone(), route)))
            }
            other => Err(bad(format!("unknown node kind {other}"))),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let proto = if let Some(reader) = node.downcast_ref::<ExchangeReader>() {
            Node {
                kind: READER,
                edge: reader.edge(),
                schema: Some(protobuf::Schema::try_from(reader.schema().as_ref())?),
                partitions: reader.partitions() as u64,
                per_producer: reader.per_producer(),
                keys: reader
                    .keys()
                    .iter()
                    .map(|k| serialize_physical_expr_with_converter(k, self, proto_converter))
                    .collect::<DfResult<Vec<_>>>()?,
                ..Node::default()
            }
        } else if let Some(writer) = node.downcast_ref::<ExchangeWriter>() {
            let (route, keys) = match writer.route() {
                Route::Single => (SINGLE, Vec::new()),
                Route::RoundRobin(_) => (ROUND_ROBIN, Vec::new()),
                Route::Hash(keys, _) => (
                    HASH,
                    keys.iter()
                        .map(|k| serialize_physical_expr_with_converter(k, self, proto_converter))
                        .collect::<DfResult<Vec<_>>>()?,
                ),
            };
            Node { kind: WRITER, partitions: writer.route().partitions() as u64, route, keys, ..Node::default() }
        } else {
            return Err(bad(format!("cannot encode {}", node.name())));
        };
        proto.encode(buf).map_err(|e| bad(e.to_string()))
    }
}

/// DataFusion's conversions, except that a scalar subquery whose value is known (it ran
/// first, as a job of its own) travels as that value.
#[derive(Debug)]
struct Converter;

impl PhysicalProtoConverterExtension for Converter {
    fn proto_to_execution_plan(
        &self,
        proto: &protobuf::PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        proto.try_into_physical_plan_with_context(ctx, self)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<protobuf::PhysicalPlanNode> {
        protobuf::PhysicalPlanNode::try_from_physical_plan_with_converter(plan.clone(), codec, self)
    }

    fn proto_to_physical_expr(
        &self,
        proto: &protobuf::PhysicalExprNode,
        input_schema: &Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        parse_physical_expr_with_converter(proto, input_schema, ctx, self)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<protobuf::PhysicalExprNode> {
        // A subquery's expression evaluates to its value once the value is there.
        if expr.is::<ScalarSubqueryExpr>()
            && let Ok(ColumnarValue::Scalar(value)) = expr.evaluate(&RecordBatch::new_empty(Arc::new(Schema::empty())))
        {
            let value: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(value));
            return serialize_physical_expr_with_converter(&value, codec, self);
        }
        serialize_physical_expr_with_converter(expr, codec, self)
    }
}

/// `plan` as bytes.
pub fn encode(plan: Arc<dyn ExecutionPlan>) -> DfResult<Vec<u8>> {
    Ok(physical_plan_to_bytes_with_proto_converter(plan, &Codec::default(), &Converter)?.to_vec())
}

/// The plan in `bytes`, its readers bound to `sources` (placeholders when there are none).
/// Damaged bytes are an error: datafusion-proto panics on some of them, which is caught here.
pub fn decode(bytes: &[u8], ctx: &TaskContext, sources: Vec<EdgeSource>) -> DfResult<Arc<dyn ExecutionPlan>> {
    let codec = Codec::for_task(sources);
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        physical_plan_from_bytes_with_extension_codec(bytes, ctx, &codec)
    }));
    decoded.unwrap_or_else(|panic| {
        let why = baton_fabric::error::panic_message(panic.as_ref());
        Err(bad(format!("the plan's bytes are damaged ({why})")))
    })
}
