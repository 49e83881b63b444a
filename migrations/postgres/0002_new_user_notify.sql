-- Wakes the daemon's new-user watch: every statement that adds rows to `users` sends one NOTIFY
-- on `inquiry_mailer_new_users`. PostgreSQL delivers a NOTIFY only when its transaction commits
-- (and folds identical ones in one transaction into one), so a listener hears of committed rows
-- only, once per committing transaction at most. Statement-level with the transition table: a
-- 10 000-row import costs one notification, and an INSERT that added nothing (ON CONFLICT DO
-- NOTHING, an empty INSERT … SELECT) sends none. The payload is empty: it only says "look".
CREATE FUNCTION inquiry_mailer_notify_new_users() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM added) THEN
        PERFORM pg_notify('inquiry_mailer_new_users', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER inquiry_mailer_new_users
    AFTER INSERT ON users
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT
    EXECUTE FUNCTION inquiry_mailer_notify_new_users();
