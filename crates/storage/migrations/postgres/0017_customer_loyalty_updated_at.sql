-- When the loyalty provider's last applied profile change happened (micros): a late delivery of
-- an older change is not applied over a newer one.
ALTER TABLE customers ADD COLUMN loyalty_updated_at BIGINT;
