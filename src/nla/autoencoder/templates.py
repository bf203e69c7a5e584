"""The two prompt templates of an NLA sidecar and their placeholders.

`prompt_templates.av` holds the injection marker once, written `{injection_char}` (the
released NLAs' name, which `nla` writes too, so the reference client reads our checkpoints);
files written by earlier versions of `nla` say `{marker}`, which is read as well.
`prompt_templates.ar` holds `{explanation}` once. Anything else in a template (another
`{name}`, an unbalanced brace) is an error that names the field, raised when the
checkpoint is loaded rather than mid-run.

The AR template also fixes the tokens every AR input ends with; `critic_suffix_ids` in the
sidecar records them (the reference's training checks each AR prompt against them), and
`check_ar_suffix` compares them with the live tokenizer.
"""

from __future__ import annotations

import string

from nla.errors import NLAError

AV_PLACEHOLDER = "injection_char"  # what nla writes (the released name)
AV_PLACEHOLDERS = (AV_PLACEHOLDER, "marker")  # what nla reads ("marker": nla before the rename)
AR_PLACEHOLDER = "explanation"


def _fields(template, where: str) -> list[str]:
    if not isinstance(template, str) or not template:
        raise NLAError(f"{where} is missing or not a string; the sidecar needs this prompt template")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise NLAError(f"{where} is not a valid template ({err}); write a literal brace as {{{{ or }}}}") from err
    fields = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            raise NLAError(f"{where} formats {{{name}}} with '{conversion or ''}{spec}'; use a bare {{{name}}}")
        fields.append(name)
    return fields


def check_av_template(template, where: str = "prompt_templates.av") -> str:
    """The placeholder name the AV template uses, after checking it holds exactly one and nothing else."""
    fields = _fields(template, where)
    unknown = sorted({f for f in fields if f not in AV_PLACEHOLDERS})
    if unknown:
        raise NLAError(f"{where} has the placeholder {{{unknown[0]}}}; an AV template may hold only "
                       f"{{{AV_PLACEHOLDER}}} (or the older {{marker}}), once")
    if len(fields) != 1:
        raise NLAError(f"{where} holds {len(fields)} injection placeholders; it needs exactly one "
                       f"{{{AV_PLACEHOLDER}}}, where the activation goes")
    return fields[0]


def fill_av_template(template: str, char: str, where: str = "prompt_templates.av") -> str:
    """The AV's user message: the template with the marker character in place of its placeholder."""
    name = check_av_template(template, where)
    return template.format(**{name: char})


def check_ar_template(template, where: str = "prompt_templates.ar") -> str:
    fields = _fields(template, where)
    if fields != [AR_PLACEHOLDER]:
        other = [f for f in fields if f != AR_PLACEHOLDER]
        problem = f"has the placeholder {{{other[0]}}}" if other else f"holds {{{AR_PLACEHOLDER}}} {len(fields)} times"
        raise NLAError(f"{where} {problem}; an AR template holds exactly one {{{AR_PLACEHOLDER}}}")
    return template


def fill_ar_template(template: str, text: str) -> str:
    return template.format(**{AR_PLACEHOLDER: text})


_PROBES = ("a short note about rivers", "Numbers: 1, 2 and 3.")  # two unlike explanations


def _ar_ids(tokenizer, template: str, text: str) -> list[int]:
    return list(tokenizer(fill_ar_template(template, text), add_special_tokens=True)["input_ids"])


def critic_suffix_ids(tokenizer, template: str) -> list[int]:
    """The tokens every AR input ends with: the common tail of two prompts, at most the suffix's own length."""
    check_ar_template(template)
    suffix = template.split("{" + AR_PLACEHOLDER + "}")[-1]
    limit = len(tokenizer.encode(suffix, add_special_tokens=False)) if suffix else 0
    first, second = (_ar_ids(tokenizer, template, text) for text in _PROBES)
    n = 0
    while n < min(limit, len(first), len(second)) and first[-1 - n] == second[-1 - n]:
        n += 1
    return first[len(first) - n:] if n else []


def check_ar_suffix(tokenizer, template: str, recorded, where) -> None:
    """The live tokenizer still ends every AR input with the recorded `critic_suffix_ids`."""
    if not recorded:
        return
    recorded = [int(i) for i in recorded]
    for text in _PROBES:
        tail = _ar_ids(tokenizer, template, text)[-len(recorded):]
        if tail != recorded:
            raise NLAError(f"prompt drift in {where}: AR inputs now end with {tail}, the sidecar's "
                           f"critic_suffix_ids say {recorded}; use the tokenizer saved with the checkpoint")
