//! The KV service.

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbCompare, PbCompareTarget, PbDeleteRequest, PbDeleteResponse,
    PbKvService, PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbResponseOp, PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnResponse,
};
use tonic::{Request, Response, Status};

use super::{pb_kv, status, unimplemented, utf8_key, Endpoint};
use crate::embedded::txn::{
    Compare, CompareResult, CompareTarget, OpResult, RangeRequest, RangeResult, Txn, TxnOp,
};
use crate::Store;

/// etcd's sort targets and orders (rpc.proto).
const SORT_NONE: i32 = 0;
const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;
const TARGET_KEY: i32 = 0;
const TARGET_VERSION: i32 = 1;
const TARGET_CREATE: i32 = 2;
const TARGET_MOD: i32 = 3;
const TARGET_VALUE: i32 = 4;

fn range_request(r: &PbRangeRequest) -> RangeRequest {
    RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        revision: r.revision,
        limit: r.limit,
        keys_only: r.keys_only,
        count_only: r.count_only,
        skip_count: false,
    }
}

impl Endpoint {
    fn do_range(&self, r: PbRangeRequest) -> Result<PbRangeResponse, Status> {
        if !(SORT_NONE..=SORT_DESCEND).contains(&r.sort_order)
            || !(TARGET_KEY..=TARGET_VALUE).contains(&r.sort_target)
        {
            return Err(Status::invalid_argument("etcdserver: invalid sort option"));
        }
        let by_key_ascending = r.sort_target == TARGET_KEY && r.sort_order != SORT_DESCEND;
        let filtered = r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let mut req = range_request(&r);
        if !by_key_ascending || filtered {
            // Sorting or filtering needs the whole range first; the limit applies afterwards, as in etcd.
            req.limit = 0;
            req.count_only = false;
        }
        let mut res = self.store.range(&req).map_err(status)?;
        if filtered {
            res.kvs.retain(|kv| {
                (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                    && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                    && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                    && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            });
        }
        if !by_key_ascending {
            // Results come sorted by key; as in etcd, another target with no order means ascending.
            match r.sort_target {
                TARGET_VERSION => res.kvs.sort_by_key(|kv| kv.version),
                TARGET_CREATE => res.kvs.sort_by_key(|kv| kv.create_revision),
                TARGET_MOD => res.kvs.sort_by_key(|kv| kv.mod_revision),
                TARGET_VALUE => res.kvs.sort_by(|a, b| a.value.cmp(&b.value)),
                _ => {}
            }
            if r.sort_order == SORT_DESCEND {
                res.kvs.reverse();
            }
        }
        if !by_key_ascending || filtered {
            if filtered {
                res.count = res.kvs.len() as i64;
            }
            if r.limit > 0 && res.kvs.len() > r.limit as usize {
                res.kvs.truncate(r.limit as usize);
                res.more = true;
            }
            if r.count_only {
                res.kvs.clear();
            }
        }
        Ok(self.range_response(res))
    }

    fn range_response(&self, res: RangeResult) -> PbRangeResponse {
        PbRangeResponse {
            header: self.header(res.revision),
            kvs: res.kvs.into_iter().map(pb_kv).collect(),
            more: res.more,
            count: res.count,
        }
    }
}

fn compare(c: PbCompare) -> Result<Compare, Status> {
    if !c.range_end.is_empty() {
        return Err(Status::unimplemented("kplane: compares over a key range are not supported"));
    }
    let target = match (PbCompareTarget::try_from(c.target), c.target_union) {
        (Ok(PbCompareTarget::Version), Some(PbTargetUnion::Version(v))) => CompareTarget::Version(v),
        (Ok(PbCompareTarget::Create), Some(PbTargetUnion::CreateRevision(v))) => {
            CompareTarget::CreateRevision(v)
        }
        (Ok(PbCompareTarget::Mod), Some(PbTargetUnion::ModRevision(v))) => CompareTarget::ModRevision(v),
        (Ok(PbCompareTarget::Value), Some(PbTargetUnion::Value(v))) => CompareTarget::Value(v),
        (Ok(PbCompareTarget::Lease), Some(PbTargetUnion::Lease(v))) => CompareTarget::Lease(v),
        // A missing union means the zero value of the target's type.
        (Ok(PbCompareTarget::Version), None) => CompareTarget::Version(0),
        (Ok(PbCompareTarget::Create), None) => CompareTarget::CreateRevision(0),
        (Ok(PbCompareTarget::Mod), None) => CompareTarget::ModRevision(0),
        (Ok(PbCompareTarget::Value), None) => CompareTarget::Value(Vec::new()),
        (Ok(PbCompareTarget::Lease), None) => CompareTarget::Lease(0),
        _ => return Err(Status::invalid_argument("etcdserver: compare target does not match its value")),
    };
    let result = match c.result {
        0 => CompareResult::Equal,
        1 => CompareResult::Greater,
        2 => CompareResult::Less,
        3 => CompareResult::NotEqual,
        _ => return Err(Status::invalid_argument("etcdserver: unknown compare result")),
    };
    Ok(Compare { key: c.key, target, result })
}

/// Which response each op wants, so prev_kv is only sent when asked for.
#[derive(Clone, Copy)]
enum Want {
    Range,
    Put { prev_kv: bool },
    Delete { prev_kv: bool },
}

fn txn_op(op: Option<PbTxnOpRequest>) -> Result<(TxnOp, Want), Status> {
    match op {
        Some(PbTxnOpRequest::RequestRange(r)) => {
            if r.sort_order != SORT_NONE && !(r.sort_target == TARGET_KEY && r.sort_order == SORT_ASCEND) {
                return Err(Status::unimplemented(
                    "kplane: sorted ranges inside a transaction are not supported",
                ));
            }
            Ok((TxnOp::Range(range_request(&r)), Want::Range))
        }
        Some(PbTxnOpRequest::RequestPut(p)) => put_op(p),
        Some(PbTxnOpRequest::RequestDeleteRange(d)) => {
            Ok((TxnOp::Delete { key: d.key, range_end: d.range_end }, Want::Delete { prev_kv: d.prev_kv }))
        }
        Some(PbTxnOpRequest::RequestTxn(_)) => {
            Err(Status::unimplemented("kplane: nested transactions are not supported"))
        }
        None => Err(Status::invalid_argument("etcdserver: empty request op")),
    }
}

fn put_op(p: PbPutRequest) -> Result<(TxnOp, Want), Status> {
    if p.ignore_value || p.ignore_lease {
        return Err(Status::unimplemented("kplane: ignore_value and ignore_lease are not supported"));
    }
    let key = utf8_key(p.key)?;
    Ok((TxnOp::Put { key, value: p.value, lease: p.lease }, Want::Put { prev_kv: p.prev_kv }))
}

impl Endpoint {
    fn op_response(&self, revision: i64, result: OpResult, want: Want) -> PbTxnOpResponse {
        match (result, want) {
            (OpResult::Range(r), _) => PbTxnOpResponse::ResponseRange(self.range_response(r)),
            (OpResult::Put { prev, .. }, Want::Put { prev_kv }) => {
                PbTxnOpResponse::ResponsePut(PbPutResponse {
                    header: self.header(revision),
                    prev_kv: if prev_kv { prev.map(pb_kv) } else { None },
                })
            }
            (OpResult::Put { prev, .. }, _) => PbTxnOpResponse::ResponsePut(PbPutResponse {
                header: self.header(revision),
                prev_kv: prev.map(pb_kv),
            }),
            (OpResult::Delete { deleted }, want) => PbTxnOpResponse::ResponseDeleteRange(PbDeleteResponse {
                header: self.header(revision),
                deleted: deleted.len() as i64,
                prev_kvs: if matches!(want, Want::Delete { prev_kv: true }) {
                    deleted.into_iter().map(pb_kv).collect()
                } else {
                    Vec::new()
                },
            }),
        }
    }
}

#[tonic::async_trait]
impl PbKvService for Endpoint {
    async fn range(&self, request: Request<PbRangeRequest>) -> Result<Response<PbRangeResponse>, Status> {
        // A range is a synchronous redb scan: run it on the blocking pool, off the async workers.
        let ep = self.clone();
        let r = request.into_inner();
        match tokio::task::spawn_blocking(move || ep.do_range(r)).await {
            Ok(res) => res.map(Response::new),
            Err(e) => Err(Status::internal(format!("etcdserver: range failed: {e}"))),
        }
    }

    type RangeStreamStream = futures::stream::Empty<Result<PbRangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(unimplemented("RangeStream"))
    }

    async fn put(&self, request: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let (op, want) = put_op(request.into_inner())?;
        let res = self.store.txn(Txn { success: vec![op], ..Default::default() }).await.map_err(status)?;
        match res.results.into_iter().next() {
            Some(r) => match self.op_response(res.revision, r, want) {
                PbTxnOpResponse::ResponsePut(p) => Ok(Response::new(p)),
                _ => Err(Status::internal("kplane: put produced another kind of result")),
            },
            None => Err(Status::internal("kplane: put produced no result")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let d = request.into_inner();
        if d.key.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        let want = Want::Delete { prev_kv: d.prev_kv };
        let op = TxnOp::Delete { key: d.key, range_end: d.range_end };
        let res = self.store.txn(Txn { success: vec![op], ..Default::default() }).await.map_err(status)?;
        match res.results.into_iter().next() {
            Some(r) => match self.op_response(res.revision, r, want) {
                PbTxnOpResponse::ResponseDeleteRange(d) => Ok(Response::new(d)),
                _ => Err(Status::internal("kplane: delete produced another kind of result")),
            },
            None => Err(Status::internal("kplane: delete produced no result")),
        }
    }

    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let t = request.into_inner();
        let compares = t.compare.into_iter().map(compare).collect::<Result<Vec<_>, _>>()?;
        let (success, success_want): (Vec<_>, Vec<_>) = t
            .success
            .into_iter()
            .map(|op| txn_op(op.request))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let (failure, failure_want): (Vec<_>, Vec<_>) = t
            .failure
            .into_iter()
            .map(|op| txn_op(op.request))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let res = self.store.txn(Txn { compares, success, failure }).await.map_err(status)?;
        let wants = if res.succeeded { success_want } else { failure_want };
        let responses = res
            .results
            .into_iter()
            .zip(wants)
            .map(|(r, want)| PbResponseOp { response: Some(self.op_response(res.revision, r, want)) })
            .collect();
        Ok(Response::new(PbTxnResponse {
            header: self.header(res.revision),
            succeeded: res.succeeded,
            responses,
        }))
    }

    async fn compact(
        &self,
        request: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let rev = request.into_inner().revision;
        self.store.compact(rev).await.map_err(status)?;
        Ok(Response::new(PbCompactionResponse { header: self.current_header()? }))
    }
}
