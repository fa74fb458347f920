//! The gRPC face (`proto/fiscal.proto`): the same operations as HTTP, mapped field by field.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::gateway::{ApiError, Gateway};
use crate::model::{self, Operation};
use crate::pb;

pub struct FiscalService {
    gw: Arc<Gateway>,
}

impl FiscalService {
    pub fn new(gw: Arc<Gateway>) -> pb::fiscal_server::FiscalServer<Self> {
        pb::fiscal_server::FiscalServer::new(Self { gw })
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(errors) => Status::invalid_argument(
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            ApiError::NotFound(d) => Status::not_found(d),
            ApiError::Conflict(d) => Status::already_exists(d),
            ApiError::Internal(d) => {
                tracing::error!(error = %d, "internal error");
                Status::internal("the gateway could not journal the request")
            }
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

fn receipt_from_pb(r: pb::Receipt) -> model::Receipt {
    let p = r.payments.unwrap_or_default();
    model::Receipt {
        id: r.id,
        device_id: r.device_id,
        cashier: r.cashier,
        items: r
            .items
            .into_iter()
            .map(|i| model::Item {
                name: i.name,
                mxik: i.mxik,
                package_code: i.package_code,
                unit: i.unit,
                qty_milli: i.qty_milli,
                price: i.price,
                discount: i.discount,
                vat_percent: i.vat_percent,
                vat_amount: i.vat_amount,
                labels: i.labels,
                commission_tin: non_empty(i.commission_tin),
            })
            .collect(),
        payments: model::Payments {
            cash: p.cash,
            card: p.card,
            other: p.other,
        },
        total: r.total,
        sale_id: non_empty(r.sale_id),
    }
}

fn receipt_to_pb(r: model::ReceiptResult) -> pb::ReceiptResult {
    pb::ReceiptResult {
        id: r.id,
        device_id: r.device_id,
        kind: r.kind.as_str().into(),
        status: r.status.as_str().into(),
        reason: r.reason.unwrap_or_default(),
        terminal_id: r.terminal_id.unwrap_or_default(),
        receipt_no: r.receipt_no.unwrap_or_default(),
        fiscal_sign: r.fiscal_sign.unwrap_or_default(),
        date_time: r.date_time.unwrap_or_default(),
        qr_url: r.qr_url.unwrap_or_default(),
        shift_no: r.shift_no.unwrap_or_default(),
        total: r.total,
    }
}

fn operation_to_pb(r: model::OperationResult) -> pb::OperationResult {
    let t = r.totals.unwrap_or_default();
    pb::OperationResult {
        id: r.id,
        device_id: r.device_id,
        operation: r.operation.as_str().into(),
        status: r.status.as_str().into(),
        reason: r.reason.unwrap_or_default(),
        shift_no: r.shift_no.unwrap_or_default(),
        date_time: r.date_time.unwrap_or_default(),
        sales_total: t.sales_total,
        refunds_total: t.refunds_total,
        receipts: t.receipts,
    }
}

fn device_to_pb(d: model::DeviceInfo) -> pb::Device {
    pb::Device {
        id: d.id,
        driver: d.driver,
        online: d.online,
        queued: d.queued,
        last_error: d.last_error.unwrap_or_default(),
        terminal_id: d.terminal_id.unwrap_or_default(),
        shift_open: d.shift_open,
        shift_no: d.shift_no.unwrap_or_default(),
        shift_opened_at: d.shift_opened_at.unwrap_or_default(),
        paper: d.paper,
    }
}

impl FiscalService {
    async fn shift(
        &self,
        req: pb::ShiftRequest,
        op: Operation,
    ) -> Result<Response<pb::OperationResult>, Status> {
        let r = model::ShiftRequest {
            id: non_empty(req.id),
            cashier: non_empty(req.cashier),
        };
        let a = self.gw.shift(&req.device_id, op, r).await?;
        Ok(Response::new(operation_to_pb(a.result)))
    }

    async fn register(
        &self,
        req: pb::Receipt,
        op: Operation,
    ) -> Result<Response<pb::ReceiptResult>, Status> {
        let a = self.gw.register(op, receipt_from_pb(req)).await?;
        Ok(Response::new(receipt_to_pb(a.result)))
    }
}

#[tonic::async_trait]
impl pb::fiscal_server::Fiscal for FiscalService {
    async fn list_devices(
        &self,
        _req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let devices = self.gw.devices().await?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: devices.into_iter().map(device_to_pb).collect(),
        }))
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let id = req.into_inner().id;
        match self.gw.device_info(&id).await? {
            Some(d) => Ok(Response::new(device_to_pb(d))),
            None => Err(Status::not_found(format!("no device {id} is configured"))),
        }
    }

    async fn open_shift(
        &self,
        req: Request<pb::ShiftRequest>,
    ) -> Result<Response<pb::OperationResult>, Status> {
        self.shift(req.into_inner(), Operation::OpenShift).await
    }

    async fn close_shift(
        &self,
        req: Request<pb::ShiftRequest>,
    ) -> Result<Response<pb::OperationResult>, Status> {
        self.shift(req.into_inner(), Operation::CloseShift).await
    }

    async fn x_report(
        &self,
        req: Request<pb::ShiftRequest>,
    ) -> Result<Response<pb::OperationResult>, Status> {
        self.shift(req.into_inner(), Operation::XReport).await
    }

    async fn register_sale(
        &self,
        req: Request<pb::Receipt>,
    ) -> Result<Response<pb::ReceiptResult>, Status> {
        self.register(req.into_inner(), Operation::Sale).await
    }

    async fn register_refund(
        &self,
        req: Request<pb::Receipt>,
    ) -> Result<Response<pb::ReceiptResult>, Status> {
        self.register(req.into_inner(), Operation::Refund).await
    }

    async fn get_receipt(
        &self,
        req: Request<pb::GetReceiptRequest>,
    ) -> Result<Response<pb::ReceiptResult>, Status> {
        let r = self.gw.receipt(&req.into_inner().id).await?;
        Ok(Response::new(receipt_to_pb(r)))
    }
}
