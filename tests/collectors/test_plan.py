from collectors.plan import plan_reads
from releve.profiles import RegisterEntry, load_profile


def entry(name, address, data_type="float32", function=4):
    return RegisterEntry(
        name=name,
        channel="1-0:32.7.0" if name == "a" else "status",
        function=function,
        address=address,
        data_type=data_type,
        kind="instantaneous",
    )


def test_adjacent_registers_merge_into_one_request():
    profile = load_profile("sdm630")
    instant = [e for e in profile.registers if e.poll_class == "instant" and e.function == 4]
    blocks = plan_reads(instant)
    assert len(blocks) < len(instant)
    for block in blocks:
        assert block.count <= 125
        for e in block.entries:
            assert block.address <= e.address and e.address + e.count <= block.address + block.count


def test_a_request_never_exceeds_125_registers():
    entries = [entry(f"e{i}", i * 2) for i in range(100)]  # 200 contiguous registers
    blocks = plan_reads(entries, max_filler=0)
    assert [b.count for b in blocks] == [124, 76]
    assert sum(len(b.entries) for b in blocks) == 100


def test_filler_between_entries_is_capped():
    entries = [entry("e0", 0), entry("e1", 10), entry("e2", 100)]
    blocks = plan_reads(entries, max_filler=16)
    assert [(b.address, b.count) for b in blocks] == [(0, 12), (100, 2)]
    assert [(b.address, b.count) for b in plan_reads(entries, max_filler=0)] == [(0, 2), (10, 2), (100, 2)]


def test_function_codes_are_never_mixed_in_one_request():
    blocks = plan_reads([entry("e0", 0, function=3), entry("e1", 2, function=4)])
    assert sorted(b.function for b in blocks) == [3, 4]


def test_block_slices_give_each_entry_its_registers():
    [block] = plan_reads([entry("e0", 10), entry("e1", 14, "uint16")], max_filler=4)
    registers = list(range(block.count))
    assert block.slice(registers, block.entries[0]) == [0, 1]
    assert block.slice(registers, block.entries[1]) == [4]
