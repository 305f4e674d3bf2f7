use std::sync::Arc;

use crate::context::Ctx;
use crate::Stop;

pub async fn run(_ctx: Arc<Ctx>, stop: Stop) {
    stop.wait().await
}
