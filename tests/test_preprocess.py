"""Background flattening, ink threshold, skew and rule removal on hand-made arrays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline import preprocess


def test_darkness_is_zero_on_plain_paper_and_ignores_lighting():
    cols = np.mgrid[0:200, 0:300][1]
    paper = (250 - 60 * cols / 300).astype(np.uint8)  # lighting falls off to the right
    dark = preprocess.darkness(paper, 41)
    assert dark.shape == paper.shape and dark.dtype == np.uint8
    assert dark.max() <= 8
    inked = paper.copy()
    cv2.line(inked, (20, 100), (280, 100), 0, 3)
    line = preprocess.darkness(inked, 41)[100, 30:270]
    assert line.min() > 200  # black on any paper brightness is near full darkness


def test_ink_threshold_never_below_floor():
    dark = np.zeros((50, 50), np.uint8)
    assert preprocess.ink_threshold(dark, 0.25) == round(0.25 * 255)
    dark[10:20, 10:20] = 40  # faint texture
    dark[30:40, 30:40] = 220  # ink
    level = preprocess.ink_threshold(dark, 0.1)
    assert 40 <= level < 220


def test_skew_is_found_on_ruled_page_and_zero_without_lines():
    page = np.zeros((400, 600), np.uint8)
    for y in range(60, 400, 50):
        cv2.line(page, (40, y), (560, y), 255, 2)
    matrix = cv2.getRotationMatrix2D((300, 200), 2.5, 1.0)
    turned = cv2.warpAffine(page, matrix, (600, 400))
    assert abs(preprocess.estimate_skew(turned, 6.0) - 2.5) <= 0.2
    assert abs(preprocess.estimate_skew(page, 6.0)) <= 0.1
    assert preprocess.estimate_skew(np.zeros((100, 100), np.uint8), 6.0) == 0.0


def test_rotation_levels_a_turned_page():
    matrix, shape = preprocess.rotation((400, 600), 3.0)
    assert shape[0] > 400 and shape[1] > 600  # the whole page fits
    levelled = preprocess.rotate(np.full((400, 600), 255, np.uint8), matrix, shape)
    assert levelled.shape == shape


def test_rules_are_removed_but_a_crossing_stroke_is_kept():
    dark = np.zeros((200, 400), np.uint8)
    cv2.line(dark, (10, 100), (390, 100), 230, 2)  # a rule
    cv2.line(dark, (196, 72), (204, 128), 230, 5)  # a stroke crossing it, shorter than a rule
    level = 100
    lines = preprocess.find_lines(dark, level, 70, 6, 120)
    assert lines.rules.shape == (1, 4)
    assert lines.horizontal[100, 50] == 255 and lines.horizontal[100, 350] == 255
    mask = np.where(dark > level, np.uint8(255), np.uint8(0))
    clean = preprocess.remove_lines(mask, lines, 6)
    assert clean[100, 50] == 0 and clean[100, 350] == 0
    assert clean[94:107, 195:206].any(axis=1).all()  # the stroke stays whole across the rule
    count = cv2.connectedComponents(clean)[0] - 1
    assert count == 1


def test_thick_blocks_are_not_rules():
    dark = np.zeros((200, 400), np.uint8)
    dark[50:90, 20:380] = 230  # a filled bar, 40 px thick
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    assert not lines.horizontal[60:80, 50:350].any()


def test_ink_threshold_keeps_pale_ink_beside_black_print():
    dark = np.zeros((60, 60), np.uint8)
    dark[10:20, 10:40] = 240  # black print
    dark[30:40, 10:40] = 95  # pale grey ballpoint, ~0.37 of the paper
    level = preprocess.ink_threshold(dark, 0.25)
    assert level < 95


def test_digit_stroke_near_both_comb_rules_is_not_a_wall():
    dark = np.zeros((200, 400), np.uint8)
    cv2.line(dark, (20, 60), (380, 60), 230, 2)  # comb top rule
    cv2.line(dark, (20, 140), (380, 140), 230, 2)  # comb bottom rule
    for x in range(20, 381, 60):
        cv2.line(dark, (x, 60), (x, 140), 230, 2)  # walls touch both rules
    cv2.line(dark, (110, 71), (110, 129), 230, 3)  # a "1" filling its cell, touching neither
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    assert lines.vertical[100, 80] == 255  # a wall is a line
    assert not lines.vertical[75:125, 108:113].any()  # the digit is not


def test_digit_stroke_touching_both_comb_rules_between_walls_is_not_a_wall():
    dark = np.zeros((200, 400), np.uint8)
    cv2.line(dark, (20, 60), (380, 60), 230, 2)  # comb top rule
    cv2.line(dark, (20, 140), (380, 140), 230, 2)  # comb bottom rule
    for x in range(20, 381, 60):
        cv2.line(dark, (x, 60), (x, 140), 230, 2)  # walls at a 60 px pitch
    cv2.line(dark, (96, 62), (96, 139), 230, 3)  # a "1" filling its cell from rule to rule
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    assert lines.vertical[100, 80] == 255 and lines.vertical[100, 140] == 255  # its cell's walls are lines
    assert not lines.vertical[70:130, 94:99].any()  # the digit is not


def comb_darkness(walls=range(20, 501, 60), bottoms=None) -> np.ndarray:
    """Darkness of a comb row: rules at y 160 and 240 from x 20 to 500, a wall at each of
    ``walls`` running down to ``bottoms[x]`` (default the bottom rule). Large enough to be
    searched at half size."""
    dark = np.zeros((600, 700), np.uint8)
    cv2.line(dark, (20, 160), (500, 160), 230, 2)
    cv2.line(dark, (20, 240), (500, 240), 230, 2)
    for x in walls:
        cv2.line(dark, (x, 160), (x, (bottoms or {}).get(x, 240)), 230, 2)
    return dark


def test_a_wall_carried_past_its_rule_is_a_wall_where_the_comb_misses_one():
    dark = comb_darkness(bottoms={260: 262})  # one wall runs on well past the bottom rule
    cv2.line(dark, (95, 158), (95, 215), 230, 3)  # a 1 reaching up to the top rule only
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    assert lines.vertical[200, 260] == 255, "at the comb's pitch, where a wall is missing"
    assert not lines.vertical[170:215, 93:98].any(), "off the pitch: a digit's stroke"


def test_a_combs_outer_wall_reaching_one_rule_is_a_wall_but_a_stroke_in_its_cell_is_not():
    dark = comb_darkness(bottoms={20: 210})  # the outer wall, cut short of the bottom rule
    cv2.line(dark, (50, 160), (50, 210), 230, 2)  # a 1 in the first cell reaching the top rule
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    assert lines.vertical[190, 20] == 255, "one pitch before the first wall"
    assert lines.vertical[170:205, 48:53].max() == 0, "half a pitch in: a digit's stroke"


def test_the_walls_of_a_combs_end_whose_rules_were_wiped_are_walls():
    # A fax's threshold wiped both rules over the comb's last two cells (the bottom one
    # over its last three): the walls there reach one rule or none, and stand on the
    # comb's pitch from its top rule down as far as the others; a shorter stroke does not.
    dark = comb_darkness(walls=range(20, 381, 60))
    dark[:, 390:] = 0
    dark[235:245, 330:] = 0
    for x in (440, 500):
        cv2.line(dark, (x, 162), (x, 238), 230, 2)  # walls with no rule left at either end
    cv2.line(dark, (470, 180), (470, 225), 230, 3)  # a 1 in the last cell
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    for x in (380, 440, 500):
        assert lines.vertical[200, x] == 255, f"wall at {x}"
    assert not lines.vertical[185:220, 468:473].any(), "half a pitch in: a digit's stroke"


def test_a_comb_wall_that_a_bold_stroke_touches_is_still_a_wall():
    # Where they touch, wall and stroke make one run too wide for a wall; the wall's rows
    # above and below that stay thin, each reaching one rule, where the comb misses a wall.
    dark = comb_darkness()
    cv2.line(dark, (268, 185), (268, 215), 230, 12)  # a bold digit's side against the wall at 260
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    assert lines.vertical[170, 260] == 255 and lines.vertical[230, 260] == 255
    assert lines.vertical[200, 268] == 0, "the digit's stroke stays"


@pytest.mark.parametrize("walls", [(20, 120, 145, 220, 400, 500), (20, 145, 180)])
def test_walls_of_irregular_or_short_rows_are_all_walls(walls):
    # Off-pitch ticks are strokes only in a regular row of enough walls: a table's cells
    # differ in width, and two or three cells give no pitch to trust.
    dark = np.zeros((200, 560), np.uint8)
    cv2.line(dark, (20, 60), (500, 60), 230, 2)
    cv2.line(dark, (20, 140), (500, 140), 230, 2)
    for x in walls:
        cv2.line(dark, (x, 60), (x, 140), 230, 2)
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    assert all(lines.vertical[100, x] == 255 for x in walls)


def test_a_tall_digit_stroke_is_not_a_vertical_rule():
    dark = np.zeros((300, 300), np.uint8)
    cv2.line(dark, (150, 60), (150, 200), 230, 4)  # a "1" 140 px tall: longer than a short rule
    cv2.line(dark, (40, 20), (40, 290), 230, 2)  # a rule taller than any digit
    lines = preprocess.find_lines(dark, 100, 70, 6, 200)
    assert not lines.vertical[60:200, 145:156].any()
    assert lines.vertical[150, 40] == 255


def test_a_digit_bar_as_long_as_a_short_rule_is_kept():
    dark = np.zeros((300, 400), np.uint8)
    cv2.line(dark, (100, 60), (100, 200), 230, 4)  # a large "4": stem,
    cv2.line(dark, (60, 160), (150, 160), 230, 4)  # a 90 px bar,
    cv2.line(dark, (60, 160), (90, 70), 230, 4)  # and its diagonal
    cv2.line(dark, (200, 240), (380, 240), 230, 2)  # an underline 180 px long
    lines = preprocess.find_lines(dark, 100, 70, 6, 250)
    assert not lines.horizontal[150:170, 60:150].any()
    assert lines.horizontal[240, 300] == 255
    assert lines.rules.shape == (1, 4)


def test_a_stroke_touching_a_rule_from_one_side_keeps_its_end():
    dark = np.zeros((200, 400), np.uint8)
    cv2.line(dark, (20, 60), (380, 60), 230, 2)  # comb top rule
    cv2.line(dark, (200, 62), (200, 120), 230, 4)  # a "1" reaching up to it
    level = 100
    lines = preprocess.find_lines(dark, level, 70, 6, 250)
    mask = np.where(dark > level, np.uint8(255), np.uint8(0))
    clean = preprocess.remove_lines(mask, lines, 6)
    assert clean[60, 50] == 0 and clean[60, 350] == 0  # the rule is gone
    assert clean[62:64, 198:203].all()  # the 1 keeps its top,
    assert not clean[55:66, 150:190].any() and not clean[55:66, 210:250].any()  # and no rule beside it


def _bar_on_a_rule() -> np.ndarray:
    dark = np.zeros((200, 400), np.uint8)
    cv2.line(dark, (20, 60), (380, 60), 230, 2)  # a box's top rule
    cv2.line(dark, (160, 61), (205, 61), 230, 4)  # a 7's bar lying on it...
    cv2.line(dark, (203, 61), (175, 130), 230, 5)  # ... and its stem
    cv2.line(dark, (260, 64), (262, 120), 230, 2)  # a thin stroke touching the rule further on
    return dark


@pytest.mark.parametrize("vertical", [False, True], ids=["bar on a rule", "side on a wall"])
def test_a_stroke_drawn_along_a_line_is_kept_and_the_line_is_not(vertical):
    dark = _bar_on_a_rule()
    dark = np.ascontiguousarray(dark.T) if vertical else dark
    level = 100
    lines = preprocess.find_lines(dark, level, 70, 6, 250)
    mask = np.where(dark > level, np.uint8(255), np.uint8(0))
    clean = preprocess.remove_lines(mask, lines, 6)
    found = lines.vertical if vertical else lines.horizontal
    view = (lambda a: a.T) if vertical else (lambda a: a)
    assert view(found)[62, 170] == 255  # the bar is taken into the line...
    assert view(clean)[61, 162:200].all()  # ... and given back whole
    assert view(clean)[60, 50] == 0 and view(clean)[60, 350] == 0  # the line is gone
    assert not view(clean)[55:67, 20:150].any() and not view(clean)[55:67, 215:250].any()  # beside the bar too
    assert not view(clean)[55:67, 270:380].any()


def test_rules_found_on_the_half_size_page_sit_on_the_page_rules():
    # Odd page sides and a rule on an odd row: the shrunk search must map back in place.
    dark = np.zeros((1201, 901), np.uint8)
    dark[601:604, 50:850] = 255
    dark[100:1100, 451:454] = 255
    lines = preprocess.find_lines(dark, 80, 60, 6, 200)
    assert np.array_equal(np.flatnonzero(lines.horizontal[:, 300]), [601, 602, 603])
    assert np.array_equal(np.flatnonzero(lines.vertical[300, :]), [451, 452, 453])
    assert lines.horizontal.shape == lines.vertical.shape == dark.shape


def test_components_label_more_pieces_than_uint16_holds():
    dots = np.zeros((600, 600), np.uint8)
    dots[::2, ::2] = 255  # 90,000 separate pixels (8-connectivity needs a gap of one)
    count, labels, stats = preprocess.components(dots)
    assert count == 90_001
    assert int(labels.max()) == 90_000 and labels[598, 598] == 90_000
    assert (stats[1:, 4] == 1).all()
    block = np.zeros((600, 600), np.uint8)
    block[100:500, 100:500] = 255  # 160,000 ink pixels, one piece
    count, labels, stats = preprocess.components(block)
    assert count == 2 and stats[1, 4] == 160_000 and labels[300, 300] == 1



def test_comb_walls_that_overshoot_their_rules_are_walls():
    dark = np.zeros((600, 700), np.uint8)  # large enough to be searched at half size
    cv2.line(dark, (20, 160), (380, 160), 230, 2)
    cv2.line(dark, (20, 240), (380, 240), 230, 2)
    for x in range(20, 381, 60):
        cv2.line(dark, (x, 156), (x, 244), 230, 2)  # drawn past both rules, as box corners are
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    assert lines.vertical[200, 20] == 255 and lines.vertical[200, 80] == 255


def test_table_columns_run_through_rules_and_comb_walls_stop_at_them():
    dark = np.zeros((300, 700), np.uint8)
    for y in (20, 80, 140):
        cv2.line(dark, (20, y), (300, y), 230, 2)  # a table's rows
    for x in (20, 160, 300):
        cv2.line(dark, (x, 20), (x, 140), 230, 2)  # its columns, through the middle rule
    cv2.line(dark, (360, 180), (680, 180), 230, 2)  # a comb's rules
    cv2.line(dark, (360, 250), (680, 250), 230, 2)
    for x in range(360, 681, 64):
        cv2.line(dark, (x, 180), (x, 250), 230, 2)  # its walls
    lines = preprocess.find_lines(dark, 100, 70, 6, 100)
    assert lines.vertical[215, 424] == 255  # comb walls are lines to remove...
    centres = sorted(int(x + w // 2) for x, y, w, h in lines.columns)
    assert len(centres) == 3  # ... but only the table's columns part what is beside them
    assert all(abs(c - x) <= 2 for c, x in zip(centres, (20, 160, 300)))


def test_feet_of_a_bold_printed_word_are_not_a_rule():
    dark = np.zeros((600, 700), np.uint8)
    cv2.putText(dark, "Claim Form", (30, 120), cv2.FONT_HERSHEY_DUPLEX, 1.2, 230, 4, cv2.LINE_AA)
    cv2.line(dark, (330, 350), (430, 350), 230, 2)  # a short underline under a "1" ...
    cv2.line(dark, (380, 300), (380, 348), 230, 3)  # ... whose stroke stands on it
    lines = preprocess.find_lines(dark, 100, 70, 6, 250)
    assert not lines.horizontal[:200].any()
    assert lines.horizontal[350, 340] == 255 and lines.horizontal[350, 420] == 255
    # A cut-out field holds no print: there the test is not made.
    assert preprocess.find_lines(dark, 100, 70, 6, 250, print_nearby=False).horizontal[:200].any()


def test_growing_into_pale_ink_mends_a_broken_stroke_but_adds_only_a_few_pixels_of_a_pale_pattern():
    dark = np.zeros((60, 200), np.uint8)
    dark[10:50, 20:24] = 200  # a stroke ...
    dark[28:32, 20:24] = 90  # ... with a pale stretch below the level
    dark[40, 24:190] = 90  # a pale pattern's line touching it
    dark[5, 100:190] = 200  # a rule, its blurred edge as pale as the pattern
    dark[6, 100:190] = 90
    mask = preprocess.ink_mask(dark, 150)
    rule = np.zeros_like(mask)
    rule[5, 100:190] = 255
    lines = preprocess.RuledLines(rule, np.zeros_like(mask), np.array([[100, 5, 90, 1]]), np.zeros((0, 4), np.int64))
    clean = mask & ~rule
    assert preprocess.components(clean)[0] - 1 == 2  # the stroke is broken
    grown = preprocess.grow_into_pale_ink(clean, dark, 60, 6, lines)
    assert preprocess.components(grown)[0] - 1 == 1
    assert np.flatnonzero(grown[40]).max() == 23 + 6  # the pattern: six pixels at most
    assert not grown[6].any()  # nothing from the rule's edge
    assert (grown >= clean).all()


def test_comb_walls_that_the_rules_stop_short_of_are_walls():
    # A drawn box's corner: its rules end a few pixels before its outer walls.
    dark = np.zeros((600, 700), np.uint8)  # large enough to be searched at half size
    cv2.line(dark, (26, 160), (494, 160), 230, 2)
    cv2.line(dark, (26, 240), (494, 240), 230, 2)
    for x in range(20, 501, 60):
        cv2.line(dark, (x, 160), (x, 240), 230, 2)
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    assert lines.vertical[200, 20] == 255 and lines.vertical[200, 500] == 255
    assert lines.vertical[200, 80] == 255


def test_the_outer_walls_of_a_short_comb_whose_rules_were_thinned_short_are_walls():
    # Three cells, too few walls for a comb row's pitch to speak for them: the outer walls
    # stand 16 px beyond the ends of rules a black-and-white threshold thinned away.
    dark = np.zeros((600, 700), np.uint8)
    cv2.line(dark, (36, 160), (184, 160), 230, 2)
    cv2.line(dark, (36, 240), (184, 240), 230, 2)
    for x in (20, 80, 140, 200):
        cv2.line(dark, (x, 160), (x, 240), 230, 2)
    lines = preprocess.find_lines(dark, 100, 70, 6, 120)
    assert lines.vertical[200, 20] == 255 and lines.vertical[200, 200] == 255


def dashed_rule_page(dash: int, gap: int, count: int) -> np.ndarray:
    """Darkness of a black-and-white page with one level rule cut into ``count`` dashes."""
    dark = np.zeros((200, 600), np.uint8)
    for k in range(count):
        x = 40 + k * (dash + gap)
        cv2.line(dark, (x, 100), (x + dash - 1, 100), 255, 2)
    return dark


def test_a_rule_in_dashes_is_a_rule_on_a_black_and_white_page_only():
    # A thin rule a hair off level, cut by a threshold into 20-px dashes 10 px apart: one
    # rule across all of them on a bilevel page; on a gray page dashes stay strokes.
    dark = dashed_rule_page(dash=20, gap=10, count=16)
    lines = preprocess.find_lines(dark, 100, 70, 6, 120, dashed=True)
    assert lines.rules.shape == (1, 4)
    x, _, w, _ = lines.rules[0]
    assert x <= 42 and x + w >= 40 + 15 * 30 + 18
    assert preprocess.find_lines(dark, 100, 70, 6, 120).rules.shape == (0, 4)


def test_a_border_in_dashes_is_a_vertical_rule_on_a_black_and_white_page_only():
    # A page border a hair off upright, cut into dashes: not a column of 1s to read.
    dark = np.ascontiguousarray(dashed_rule_page(dash=20, gap=10, count=16).T)
    lines = preprocess.find_lines(dark, 100, 70, 6, 120, dashed=True)
    rows = np.flatnonzero(lines.vertical.any(axis=1))
    assert rows.min() <= 42 and rows.max() >= 40 + 15 * 30 + 18
    assert not preprocess.find_lines(dark, 100, 70, 6, 120).vertical.any()


@pytest.mark.parametrize("dash, gap, count", [(20, 10, 2), (20, 60, 8), (6, 10, 30)])
def test_two_dashes_far_apart_or_short_specks_are_no_rule(dash, gap, count):
    # Two level strokes (two digits' bars), dashes further apart than half a rule's
    # length, or specks shorter than a fifth of it do not make a rule.
    dark = dashed_rule_page(dash, gap, count)
    assert preprocess.find_lines(dark, 100, 70, 6, 120, dashed=True).rules.shape == (0, 4)
