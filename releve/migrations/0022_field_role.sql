-- Dashboard role 'field': the field-work page (/field: open work orders, service-level breaches, the
-- map of open orders), for the people who dispatch crews. Nobody gets it on upgrade: a dispatcher is
-- given it with `releve dashboard passwd <user> --role field …` (admin opens no customer data by
-- itself since 0018). The work-order tables are readable by the reader role since 0020.
ALTER TABLE dashboard_user DROP CONSTRAINT IF EXISTS dashboard_user_roles_check;
ALTER TABLE dashboard_user ADD CONSTRAINT dashboard_user_roles_check
    CHECK (roles <@ ARRAY['operator', 'fraud', 'billing', 'field', 'admin']::text[] AND cardinality(roles) > 0);
COMMENT ON TABLE dashboard_user IS
    'Dashboard logins: Argon2id hash (never the password) and roles operator/fraud/billing/field/admin.';
