-- Where a pulled image came from (Incus' `update_source`): JSON with server, protocol
-- and alias; '' for images built, imported or published here.
ALTER TABLE images ADD COLUMN source TEXT NOT NULL DEFAULT '';
