-- Dashboard roles: 'operator' opens the control room and the meter pages, which now need a login;
-- 'admin' opens the users page only. Users who were admin (every page until now) keep every page.
-- Hashes are Argon2id from now on; scrypt hashes of 0010 stay valid until the password is next set.
ALTER TABLE dashboard_user DROP CONSTRAINT IF EXISTS dashboard_user_roles_check;
ALTER TABLE dashboard_user ADD CONSTRAINT dashboard_user_roles_check
    CHECK (roles <@ ARRAY['operator', 'fraud', 'billing', 'admin']::text[] AND cardinality(roles) > 0);
UPDATE dashboard_user SET roles = ARRAY['admin', 'billing', 'fraud', 'operator']::text[], updated_at = now()
WHERE 'admin' = ANY (roles);
COMMENT ON TABLE dashboard_user IS
    'Dashboard logins: Argon2id hash (never the password) and roles operator/fraud/billing/admin.';
