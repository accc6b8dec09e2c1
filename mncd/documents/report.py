"""A verification in words, line by line (what ``mncctl verify`` prints; a window may show the
same lines or render :mod:`mncd.documents.verdict` its own way)."""

from __future__ import annotations

from mncd.documents.text import N_, _, ngettext
from mncd.documents.verdict import SignatureCheck, TimeBasis, Validity, Verdict, Verification
from mncd.documents.verify import in_japan, revocation_note

#: The verdict's words (msgids); the keys are :class:`Verdict` values.
VERDICT_TEXT = {
    Verdict.VALID: N_("valid"),
    Verdict.UNTRUSTED: N_("intact, but not anchored at a known CA"),
    Verdict.EXPIRED: N_(
        "NOT VALID: the certificate is expired or revoked, and no timestamp proves the "
        "signature was made before"
    ),
    Verdict.INVALID: N_("INVALID"),
    Verdict.NO_SIGNATURE: N_("no signature"),
}
VALIDITY_TEXT = {
    Validity.VALID: N_("certificate valid"),
    Validity.EXPIRED: N_("certificate expired"),
    Validity.REVOKED: N_("certificate revoked"),
    Validity.NOT_YET_VALID: N_("certificate not yet valid"),
    Validity.UNKNOWN: N_("certificate not judged"),
}


def verdict_text(verdict: Verdict) -> str:
    return _(VERDICT_TEXT[verdict])


def _yes_no(ok: bool) -> str:
    return _("yes") if ok else _("NO")


def signature_lines(number: int, check: SignatureCheck) -> list[str]:
    """One signature: who, the three parts, then problems and notes."""
    lines = [
        _("signature {number} ({label}): {verdict}").format(
            number=number, label=check.label, verdict=verdict_text(check.verdict)
        )
    ]
    if check.signer:
        lines.append(_("  signed by:  {signer}").format(signer=check.signer))
    if check.serial:
        lines.append(
            _("  certificate: serial {serial}, issuer {issuer}").format(
                serial=check.serial.upper(), issuer=check.issuer
            )
        )
    intact = check.intact
    lines.append(
        _("  intact:     {answer}").format(answer=_yes_no(intact.ok and not intact.problems))
    )
    if intact.covers:
        lines.append(_("  covers:     {covers}").format(covers=intact.covers))
    trusted = check.trust
    lines.append(
        _("  trusted:    {answer} ({chain})").format(
            answer=_yes_no(trusted.ok), chain=trusted.anchor or _("not anchored")
        )
    )
    timing = check.timing
    if timing.moment is not None:
        if timing.basis is TimeBasis.TIMESTAMP:
            when = _("at {time}, proven by a timestamp ({tsa})").format(
                time=in_japan(timing.moment), tsa=timing.timestamp_authority
            )
        else:
            when = _("judged now ({time}): no timestamp proves when it was signed").format(
                time=in_japan(timing.moment)
            )
        lines.append(
            _("  in time:    {answer}: {validity}, {when}").format(
                answer=_yes_no(timing.ok), validity=_(VALIDITY_TEXT[timing.validity]), when=when
            )
        )
    if timing.claimed is not None:
        claim = in_japan(timing.claimed)
        if timing.claimed_zone_assumed:
            lines.append(
                _(
                    "  claimed:    {time} (as the signer's computer says; no time zone given, "
                    "read as Japan's time)"
                ).format(time=claim)
            )
        else:
            lines.append(
                _("  claimed:    {time} (as the signer's computer says)").format(time=claim)
            )
    for problem in [*intact.problems, *trusted.problems, *timing.problems]:
        lines.append(_("  problem: {problem}").format(problem=problem))
    for note in [*timing.notes, *check.notes]:
        lines.append(_("  note: {note}").format(note=note))
    return lines


def report_lines(result: Verification) -> list[str]:
    """The verification in words: each signature, then the verdict."""
    count = len(result.signatures)
    kind = "PDF" if result.kind == "pdf" else _("file with a detached CMS signature")
    lines = [
        ngettext("{file}: {kind}, {n} signature", "{file}: {kind}, {n} signatures", count).format(
            file=result.file, kind=kind, n=count
        )
    ]
    if result.signature_file is not None:
        lines.append(_("  signature file: {path}").format(path=result.signature_file))
    for problem in result.problems:
        lines.append(_("  problem: {problem}").format(problem=problem))
    for number, check in enumerate(result.signatures, 1):
        lines.extend(signature_lines(number, check))
    for stamp in result.timestamps:
        state = _("intact") if stamp.intact else _("DAMAGED")
        lines.append(
            _("document timestamp ({label}): {time} by {tsa}, {state}").format(
                label=stamp.label,
                time=in_japan(stamp.time) if stamp.time else "?",
                tsa=stamp.authority or "?",
                state=state,
            )
        )
        for problem in stamp.problems:
            lines.append(_("  note: {note}").format(note=problem))
    if result.unsigned_fields:
        lines.append(
            _("unsigned signature fields: {fields}").format(
                fields=", ".join(result.unsigned_fields)
            )
        )
    if result.signatures:
        lines.append(revocation_note())
    lines.append(_("result: {verdict}").format(verdict=verdict_text(result.verdict)))
    return lines
