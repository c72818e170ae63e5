-- Where a meter's main register rolls over, in its own unit (kWh, m3). Digits and counter width say
-- the same only when the register counts whole units; a 16-bit counter of 0.1 kWh wraps at 6553.6.
ALTER TABLE meter ADD COLUMN register_wrap double precision CHECK (register_wrap > 0);
COMMENT ON COLUMN meter.register_wrap IS
    'Value at which the main register returns to zero, in the meter unit (NULL: derive from digits or width).';
