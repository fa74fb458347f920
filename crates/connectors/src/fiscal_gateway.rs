//! Client of the `savdo-fiscal` gateway and the consumer that fiscalizes receipts.
