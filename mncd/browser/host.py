"""``mncd-browser-host``: the native-messaging host the browser starts for the extension.

It answers only the bridge's own extension (Chromium passes the extension's origin, Firefox the
add-on id), reads requests with strict framing and limits, and asks the daemon through
:mod:`mncd.client`: the daemon's PIN gate and dialog do the asking, naming the site and the
browser. No PIN ever passes through the browser or this host. Nothing personal is logged.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, BinaryIO

from mncd import errors
from mncd.browser import identity
from mncd.browser.framing import FramingError, read_message, write_message
from mncd.browser.messages import (
    MODES,
    OK,
    Request,
    RequestError,
    b64,
    certificate_text,
    error,
    hex_text,
    parse_request,
)
from mncd.client import BusUnavailable, CallTimeout, ClientError, DaemonUnavailable, MyNumberCard

UNREACHABLE = (
    "マイナンバーカードのサービス（mncd）に接続できません。「mncctl doctor」で確認してください。"
)
#: Japanese messages for the page, by the daemon's error.
MESSAGES: dict[type[BaseException], str] = {
    errors.NoCard: "カードリーダーにマイナンバーカードを置いてください。",
    errors.PcscUnavailable: "カードリーダーのサービス（pcscd）が動いていません。",
    errors.PinIncorrect: "暗証番号が違います。",
    errors.PinBlocked: (
        "暗証番号がロックされています。お住まいの市区町村の窓口で再設定してください。"
    ),
    errors.PinRequired: "暗証番号の入力画面を表示できませんでした。",
    errors.Cancelled: "操作は取り消されました。",
    errors.CardRemoved: "カードが取り外されました。カードを置き直して、もう一度お試しください。",
    errors.CertificateMissing: "このカードには必要な電子証明書がありません。",
    errors.CertificateInvalid: "電子証明書が失効しているか、有効期限が切れています。",
    errors.Busy: "別の暗証番号の入力画面が開いています。閉じてから、もう一度お試しください。",
    errors.InvalidArgument: "要求の内容が正しくありません。",
    CallTimeout: "マイナンバーカードのサービスが時間内に応答しませんでした。",
}
FAILED = "カードの処理に失敗しました。「mncctl doctor」で確認してください。"
NOT_OURS = "この拡張機能からの要求には応じられません。"
NO_NUMBER = "カードの製造番号を読み取れないため、このサービスには使えません。"


def message_for(exc: BaseException) -> str:
    """The Japanese message for a failure of a call to the daemon."""
    if isinstance(exc, (DaemonUnavailable, BusUnavailable)):
        return UNREACHABLE
    for kind, text in MESSAGES.items():
        if isinstance(exc, kind):
            if isinstance(exc, errors.PinIncorrect) and exc.tries_left is not None:
                return f"{text}残り{exc.tries_left}回です。"
            return text
    return FAILED


def allowed_caller(argv: list[str]) -> bool:
    """Whether the browser started this host for the bridge's own extension."""
    if argv[:1] == [identity.chromium_origin()]:
        return True
    return len(argv) >= 2 and argv[1] == identity.firefox_addon_id()


async def answer(request: Request, address: str | None = None) -> dict[str, Any]:
    """The answer to a checked request, asking the daemon."""
    if request.mode == "05":
        return {"result": OK, "mode": "05"}
    if request.mode == "check":
        return await _check(address)
    try:
        async with await MyNumberCard.connect(address) as mnc:
            return await _card_answer(mnc, request)
    except (errors.MncdError, ClientError) as exc:
        return error(message_for(exc), request.mode)


async def _card_answer(mnc: MyNumberCard, request: Request) -> dict[str, Any]:
    if request.mode == "04":
        info = await mnc.read_card_info(site=request.origin, combination_code=True)
        if not info.combination_code:
            return error(NO_NUMBER, request.mode)
        return {
            "result": OK,
            "mode": "04",
            "name": hex_text(info.name),
            "sex": hex_text(info.sex),
            "address": hex_text(info.address),
            "birthday": hex_text(info.birth_date),
            "uuid": info.installation_id,
            "combination_code": info.combination_code,
        }
    which = "auth" if request.mode == "01" else "sign"
    signed = await mnc.sign_digest_infos(
        which, request.digests, site=request.origin, combination_code=True
    )
    if not signed.combination_code:
        return error(NO_NUMBER, request.mode)
    signatures = [b64(signature) for signature in signed.signatures]
    return {
        "result": OK,
        "mode": request.mode,
        "uuid": signed.installation_id,
        "signature": signatures[0] if request.mode == "01" else signatures,
        "certificate": certificate_text(signed.certificate),
        "combination_code": signed.combination_code,
    }


async def _check(address: str | None) -> dict[str, Any]:
    """``check``: whether the daemon answers, a reader is connected and a My Number Card
    (its JPKI application) is in it."""
    daemon = reader = card = False
    try:
        async with await MyNumberCard.connect(address) as mnc:
            status = await mnc.get_status()
        daemon = True
        reader = bool(status.readers)
        card = status.state == "card-present" and bool(status.token)
    except (errors.MncdError, ClientError):
        pass
    return {
        "result": OK,
        "mode": "check",
        "version": identity.version(),
        "diagnostics": [
            {"item": "daemon", "ok": daemon, "message": _says(daemon, "mncd に接続しました。",
                                                              UNREACHABLE)},
            {"item": "reader", "ok": reader, "message": _says(
                reader, "カードリーダーが接続されています。", "カードリーダーが見つかりません。")},
            {"item": "card", "ok": card, "message": _says(
                card, "マイナンバーカード（公的個人認証AP）を確認しました。",
                "カードリーダーにマイナンバーカードを置いてください。")},
        ],
    }  # fmt: skip


def _says(ok: bool, yes: str, no: str) -> str:
    return yes if ok else no


def serve(argv: list[str], stdin: BinaryIO, stdout: BinaryIO, address: str | None = None) -> int:
    """Answer the browser's messages until it closes the pipe (Chromium sends one)."""
    if not allowed_caller(argv):
        write_message(stdout, error(NOT_OURS))
        return 1
    while True:
        try:
            message = read_message(stdin)
        except FramingError:
            write_message(stdout, error("要求の形式が正しくありません。"))
            return 1
        if message is None:
            return 0
        try:
            request = parse_request(message)
        except RequestError as exc:
            mode = message.get("mode") if isinstance(message, dict) else None
            write_message(stdout, error(str(exc), mode if mode in MODES else None))
            continue
        write_message(stdout, asyncio.run(answer(request, address)))


def main() -> int:
    """The entry point the browser runs (``mncd-browser-host``)."""
    return serve(sys.argv[1:], sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
