#!/usr/bin/env python3
"""Builds tests/fixtures/sdk/ from the pydantic models of PyPI vapi-server-sdk 3.0.0.

Run inside the venv that tests/sdk/check makes. Every payload is constructed from the SDK's
models and written with the SDK's own encoder (its `.dict()`: by alias, unset fields left out),
so a field the SDK lacks or a value of the wrong type fails here already. Fixed ids, fixed
times, no randomness: two runs write the same bytes. tests/sdk/README.md lists the ids, the
timing rules and the large-report rule.

    build_fixtures.py [--out DIR] [--large DIR]
"""

import argparse
import datetime as dt
import json
import pathlib

from vapi.core.jsonable_encoder import jsonable_encoder
from vapi.types import (
    Analysis,
    Artifact,
    AssistantOverrides,
    BotMessage,
    Call,
    CallArtifactUploadItem,
    CampaignContact,
    Chat,
    CreateAssistantDto,
    CreateCustomerDto,
    Mono,
    OpenAiMessage,
    Recording,
    SchedulePlan,
    Server,
    ServerMessage,
    ServerMessageAssistantRequest,
    ServerMessageAssistantSpeech,
    ServerMessageCallArtifactUpload,
    ServerMessageCallDeleted,
    ServerMessageCallDeleteFailed,
    ServerMessageCallEndpointingRequest,
    ServerMessageCampaignPredial,
    ServerMessageChatCreated,
    ServerMessageChatDeleted,
    ServerMessageConversationUpdate,
    ServerMessageEndOfCallReport,
    ServerMessageHandoffDestinationRequest,
    ServerMessageHang,
    ServerMessageKnowledgeBaseRequest,
    ServerMessageLanguageChangeDetected,
    ServerMessageModelOutput,
    ServerMessageResponseAssistantRequest,
    ServerMessageResponseCallEndpointingRequest,
    ServerMessageResponseCampaignPredial,
    ServerMessageResponseHandoffDestinationRequest,
    ServerMessageResponseKnowledgeBaseRequest,
    ServerMessageResponseToolCalls,
    ServerMessageResponseTransferDestinationRequest,
    ServerMessagePhoneCallControl,
    ServerMessageSessionCreated,
    ServerMessageSessionDeleted,
    ServerMessageSessionUpdated,
    ServerMessageSpeechUpdate,
    ServerMessageStatusUpdate,
    ServerMessageToolCalls,
    ServerMessageTranscript,
    ServerMessageTransferDestinationRequest,
    ServerMessageTransferUpdate,
    ServerMessageUserInterrupted,
    ServerMessageVoiceInput,
    ServerMessageVoiceRequest,
    Session,
    SystemMessage,
    ToolCall,
    ToolCallFunction,
    ToolCallMessage,
    ToolCallResultMessage,
    UserMessage,
)

REPO = pathlib.Path(__file__).resolve().parents[2]

CURRENT = ("vapi-server-sdk==3.0.0", "@vapi-ai/server-sdk@2.0.1")
LEGACY = ("vapi-server-sdk==0.1.0", "@vapi-ai/server-sdk@0.5.0")
# py 0.1.0 types `transcript.type` as the one literal "transcript": no Python SDK has the
# single-quoted final name, so that fixture is checked against npm 0.5.0 alone.
LEGACY_NPM_ONLY = ("-", "@vapi-ai/server-sdk@0.5.0")

TENANT_TOKEN = "__VOXANNE_TENANT_TOKEN__"  # the tests replace it
WEBHOOK_URL = "https://voxanne.example/webhooks/vapi"


def uid(prefix: str, n: int) -> str:
    """A fixed UUID whose first group says what it names (README.md lists them)."""
    return f"{prefix.ljust(8, '0')}-0000-4000-8000-{n:012d}"


ORG_ID = uid("0a", 1)
ASSISTANT_AVA = uid("a", 1)  # saved inbound receptionist, explicit serverMessages
ASSISTANT_MAX = uid("a", 2)  # saved outbound reminder caller, default serverMessages
ASSISTANT_NORA = uid("a", 3)  # squad member: front desk
ASSISTANT_BEN = uid("a", 4)  # squad member: billing
ASSISTANT_SHARED = uid("a", 5)  # saved, shared by every tenant: registered to none
SQUAD_ID = uid("5a", 1)
WORKFLOW_ID = uid("f", 1)
PHONE_MAIN = uid("b", 1)
PHONE_SQUAD = uid("b", 2)
PHONE_OUTBOUND = uid("b", 3)
PHONE_UNASSIGNED = uid("b", 4)
CAMPAIGN_ID = uid("ca", 1)
CONTACT_ID = uid("cc", 1)
CHAT_ID = uid("c4a7", 1)
SESSION_ID = uid("5e", 1)
TWILIO_ACCOUNT_SID = "AC00000000000000000000000000000001"
CUSTOMER = {"number": "+15557650101", "name": "Jordan Lee"}

SERVER_MESSAGES = [
    "conversation-update",
    "end-of-call-report",
    "speech-update",
    "status-update",
    "tool-calls",
    "transcript",
    "user-interrupted",
]
PROMPT = "You are Ava, the receptionist of Riverside Dental. Book, move and cancel appointments."


def at(base: dt.datetime, seconds: float) -> dt.datetime:
    return base + dt.timedelta(seconds=seconds)


def epoch_ms(when: dt.datetime) -> int:
    return round(when.timestamp() * 1000)


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


def assistant(name: str, **fields) -> CreateAssistantDto:
    return CreateAssistantDto(
        name=name,
        model={"provider": "openai", "model": "gpt-4o", "messages": [{"role": "system", "content": PROMPT}]},
        voice={"provider": "11labs", "voiceId": "sarah"},
        transcriber={"provider": "deepgram", "model": "nova-3", "language": "en"},
        server=Server(url=WEBHOOK_URL),
        **fields,
    )


AVA = assistant(
    "Ava", first_message="Thank you for calling Riverside Dental.", server_messages=SERVER_MESSAGES
)
MAX = assistant("Max")  # no serverMessages: Vapi's default set
TRANSIENT = assistant(
    "Ava (inline)",
    first_message="Hi, this is Ava from Riverside Dental.",
    server_messages=SERVER_MESSAGES,
    metadata={"voxanne_tenant": TENANT_TOKEN},
)


def twilio_number(number: str, name: str, **ids) -> dict:
    # Each message type has its own phone-number union; the model picks the member by `provider`.
    return {
        "provider": "twilio",
        "number": number,
        "twilioAccountSid": TWILIO_ACCOUNT_SID,
        "name": name,
        **ids,
    }


MAIN_LINE = twilio_number("+15551230001", "Riverside main line", assistantId=ASSISTANT_AVA)
SQUAD_LINE = twilio_number("+15551230002", "Riverside squad line", squadId=SQUAD_ID)
REMINDER_LINE = twilio_number("+15551230003", "Riverside reminders", assistantId=ASSISTANT_MAX)


class LiveCall:
    """One call as it changes: `call()` is its SDK `Call` now, `set()` moves it on."""

    def __init__(self, call_id: str, created: dt.datetime, status: str, **fields):
        self.id, self.created, self.status, self.updated, self.fields = (
            call_id,
            created,
            status,
            created,
            fields,
        )

    def set(self, status: str, when: dt.datetime, **more) -> None:
        self.status, self.updated = status, when
        self.fields.update(more)

    def call(self) -> Call:
        return Call(
            id=self.id,
            org_id=ORG_ID,
            created_at=self.created,
            updated_at=self.updated,
            status=self.status,
            **self.fields,
        )


class Conversation:
    """The call's message list (`artifact.messages`, `conversation-update.messages`) and its OpenAI
    form, grown line by line. `time`/`endTime` are epoch milliseconds and `secondsFromStart` the
    seconds since `started`; an utterance keeps the same numbers wherever it appears."""

    def __init__(self, started: dt.datetime, prompt: str = PROMPT):
        self.started = started
        self.messages = [
            SystemMessage(role="system", message=prompt, time=epoch_ms(started), seconds_from_start=0)
        ]
        self.openai = [OpenAiMessage(role="system", content=prompt)]
        self.lines = []  # (speaker, text) for artifact.transcript

    def times(self, start: float, end: float | None = None) -> dict:
        times = {"time": epoch_ms(at(self.started, start)), "seconds_from_start": start}
        if end is not None:
            times["end_time"] = epoch_ms(at(self.started, end))
        return times

    def bot(self, text: str, start: float, end: float, **speaker) -> None:
        self.messages.append(BotMessage(role="bot", message=text, **self.times(start, end), **speaker))
        self.openai.append(OpenAiMessage(role="assistant", content=text))
        self.lines.append(("AI", text))

    def user(self, text: str, start: float, end: float) -> None:
        self.messages.append(UserMessage(role="user", message=text, **self.times(start, end)))
        self.openai.append(OpenAiMessage(role="user", content=text))
        self.lines.append(("User", text))

    def tool_call(self, call: ToolCall, start: float) -> None:
        message = ToolCallMessage(
            role="tool_calls", tool_calls=[call.dict()], message="", **self.times(start)
        )
        self.messages.append(message)
        # The SDK's OpenAiMessage has only role and content (no tool_calls): the call is content null.
        self.openai.append(OpenAiMessage(role="assistant", content=None))

    def tool_result(self, call: ToolCall, result: str, start: float) -> None:
        self.messages.append(
            ToolCallResultMessage(
                role="tool_call_result",
                tool_call_id=call.id,
                name=call.function.name,
                result=result,
                **self.times(start),
            )
        )
        self.openai.append(OpenAiMessage(role="tool", content=result))

    def transcript(self) -> str:
        return "\n".join(f"{speaker}: {text}" for speaker, text in self.lines)

    def snapshot(self) -> dict:
        return {"messages": list(self.messages), "messages_open_ai_formatted": list(self.openai)}


def recording_urls(call_id: str) -> dict:
    base = f"https://storage.vapi.ai/{call_id}"
    return {
        "recording_url": f"{base}-mono.wav",
        "stereo_recording_url": f"{base}-stereo.wav",
        "recording": Recording(
            stereo_url=f"{base}-stereo.wav",
            mono=Mono(
                combined_url=f"{base}-mono.wav",
                assistant_url=f"{base}-assistant.wav",
                customer_url=f"{base}-customer.wav",
            ),
        ),
    }


TRANSPORTS = {"webCall": "daily", "vapi.websocketCall": "vapi.websocket"}  # phone calls: twilio


def costs(minutes: float, call_type: str) -> list[dict]:
    # The report's own costs union; the model picks the member by `type`.
    transport = TRANSPORTS.get(call_type, "twilio")
    return [
        {"type": "transport", "provider": transport, "minutes": minutes, "cost": 0.0085},
        {"type": "transcriber", "transcriber": {"provider": "deepgram"}, "minutes": minutes, "cost": 0.0043},
        {
            "type": "model",
            "model": {"provider": "openai"},
            "promptTokens": 2310,
            "completionTokens": 96,
            "cost": 0.0067,
        },
        {"type": "voice", "voice": {"provider": "11labs"}, "characters": 412, "cost": 0.0124},
        {"type": "vapi", "subType": "normal", "minutes": minutes, "cost": 0.05},
    ]


DEFAULT_ANALYSIS = Analysis(
    summary="The caller asked a question and the assistant answered it.",
    structured_data={"outcome": "resolved"},
    success_evaluation="true",
)


def report(
    convo: Conversation,
    ended: dt.datetime,
    ended_reason: str,
    context: dict,
    artifact_urls: dict,
    analysis: Analysis = DEFAULT_ANALYSIS,
) -> ServerMessageEndOfCallReport:
    minutes = round((ended - convo.started).total_seconds() / 60, 4)
    return ServerMessageEndOfCallReport(
        type="end-of-call-report",
        ended_reason=ended_reason,
        artifact=Artifact(
            messages=list(convo.messages),
            messages_open_ai_formatted=list(convo.openai),
            transcript=convo.transcript(),
            **artifact_urls,
        ),
        analysis=analysis,
        cost=0.0819,
        costs=costs(minutes, context["call"].type),
        started_at=convo.started,
        ended_at=ended,
        **context,
    )


def wire(model) -> dict:
    """The SDK's own encoder (its `.dict()`: by alias, unset fields left out; datetimes as ISO
    strings), with integral floats then printed as integers, as JavaScript's JSON.stringify
    (Vapi's servers run on Node) prints them: an epoch-ms `time` is 1795701600000, not
    1795701600000.0."""
    return js_numbers(jsonable_encoder(model))


def envelope(message) -> dict:
    """{"message": ...}, checked as the SDK's ServerMessage. The message is encoded on its own:
    through the envelope, the SDK's alias pass walks it once per member of the 29-member union
    (minutes for the large report) and gives the same JSON."""
    ServerMessage(message=message)
    return {"message": wire(message)}


def js_numbers(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: js_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [js_numbers(item) for item in value]
    return value


class Out:
    """Writes fixtures and remembers which SDKs each one is checked against."""

    def __init__(self, root: pathlib.Path):
        self.root, self.sdks = root, []

    def write(self, name: str, message, sdks=CURRENT) -> None:
        self.write_doc(name, envelope(message), sdks)

    def write_doc(self, name: str, doc: dict, sdks=CURRENT) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        self.sdks.append((name, *sdks))

    def write_list(self) -> None:
        rows = ["fixture\tpython\tnpm"] + ["\t".join(row) for row in sorted(self.sdks)]
        (self.root / "validated-against.tsv").write_text("\n".join(rows) + "\n")


# -- sequences ---------------------------------------------------------------------------------


class Sequence:
    """The numbered messages of one call, sequences/<name>/NN-<type>[-<status or kind>].json.
    Every message carries `timestamp`, the call as it is then, and the sequence's fixed fields."""

    def __init__(self, out: Out, name: str, live: LiveCall, convo: Conversation, **fixed):
        self.out, self.name, self.live, self.convo, self.fixed = out, name, live, convo, fixed
        self.n, self.last = 0, 0

    def context(self, seconds: float) -> dict:
        ts = epoch_ms(at(self.convo.started, seconds))
        return {"timestamp": ts, "call": self.live.call(), **self.fixed}

    def emit(self, message) -> None:
        assert message.timestamp >= self.last, f"{self.name}: message {self.n + 1} goes back in time"
        self.n, self.last = self.n + 1, message.timestamp
        if message.type.startswith("transcript["):
            slug = "transcript-final-typed-name"
        elif message.type in ("status-update", "speech-update"):
            slug = f"{message.type}-{message.status}"
        elif message.type == "transcript":
            slug = f"transcript-{message.transcript_type}"
        else:
            slug = message.type
        self.out.write(f"sequences/{self.name}/{self.n:02d}-{slug}.json", message)

    def status(self, value: str, seconds: float, **call_fields) -> None:
        self.live.set(value, at(self.convo.started, seconds), **call_fields)
        reason = {"ended_reason": call_fields["ended_reason"]} if "ended_reason" in call_fields else {}
        self.emit(
            ServerMessageStatusUpdate(type="status-update", status=value, **reason, **self.context(seconds))
        )

    def say(
        self,
        role: str,
        text: str,
        start: float,
        end: float,
        *,
        turn: int,
        speech=True,
        transcripts=True,
        **speaker,
    ):
        """One utterance as Vapi reports it: speech-update started, a partial transcript while it
        is spoken, speech-update stopped, the final transcript, then a conversation-update.

        `timestamp` is when Vapi sends the message ("This is the timestamp of the message."), so
        each one is stamped at the moment it describes: started at the line's `time`, stopped at
        its `endTime`, the partial 60 % of the way, the final 0.3 s and the conversation-update
        0.4 s after `endTime` (a final transcript exists only once the utterance is over)."""
        if speech:
            self.speech("started", role, turn, start)
        if transcripts:
            words = text.split()
            partial = " ".join(words[: max(1, len(words) * 3 // 5)])
            self.transcript("partial", role, partial, start + 0.6 * (end - start), **speaker)
        if speech:
            self.speech("stopped", role, turn, end)
        if transcripts:
            self.transcript("final", role, text, end + 0.3, **speaker)
        self.line(role, text, start, end, **speaker)

    def speech(self, status: str, role: str, turn: int, seconds: float) -> None:
        sdk_role = "assistant" if role == "bot" else "user"
        self.emit(
            ServerMessageSpeechUpdate(
                type="speech-update", status=status, role=sdk_role, turn=turn, **self.context(seconds)
            )
        )

    def transcript(self, kind: str, role: str, text: str, seconds: float, **speaker) -> None:
        self.emit(
            ServerMessageTranscript(
                type="transcript" if kind == "partial" else 'transcript[transcriptType="final"]',
                role="assistant" if role == "bot" else "user",
                transcript_type=kind,
                transcript=text,
                **speaker,
                **self.context(seconds),
            )
        )

    def line(self, role: str, text: str, start: float, end: float, **speaker) -> None:
        """The utterance joins the call's message list: a conversation-update 0.4 s after it ends."""
        if role == "bot":
            self.convo.bot(text, start, end, **speaker)
        else:
            self.convo.user(text, start, end)
        self.conversation_update(end + 0.4)

    def conversation_update(self, seconds: float) -> None:
        self.emit(
            ServerMessageConversationUpdate(
                type="conversation-update", **self.convo.snapshot(), **self.context(seconds)
            )
        )

    def end(self, seconds: float, ended_reason: str, report_after: float, **report_fields) -> None:
        """status-update ended, then the end-of-call-report `report_after` s later: its
        `artifact.messages` are the last conversation-update's messages."""
        ended = at(self.convo.started, seconds)
        self.status("ended", seconds, ended_at=ended, ended_reason=ended_reason)
        self.live.set("ended", at(ended, report_after), cost=0.0819)
        context = self.context(seconds + report_after)
        self.emit(
            report(self.convo, ended, ended_reason, context, recording_urls(self.live.id), **report_fields)
        )


def availability_call(n: int) -> ToolCall:
    arguments = json.dumps({"service": "cleaning", "week": "2026-11-23"}, separators=(",", ":"))
    return ToolCall(
        id=f"call_ckav{n:04d}",
        type="function",
        function=ToolCallFunction(name="check_availability", arguments=arguments),
    )


def availability_tool(call: ToolCall) -> dict:
    # The message's own tool union; the model picks the member by `type`.
    return {
        "type": "function",
        "async": False,
        "server": {"url": WEBHOOK_URL},
        "function": {
            "name": "check_availability",
            "description": "Lists free appointment slots.",
            "parameters": {
                "type": "object",
                "properties": {
                    "service": {"type": "string", "enum": ["cleaning", "checkup", "filling"]},
                    "week": {"type": "string", "format": "date", "description": "Monday of the week"},
                },
                "required": ["service"],
            },
        },
        "toolCall": call,
    }


def tool_calls(tool: ToolCall, **fields) -> ServerMessageToolCalls:
    return ServerMessageToolCalls(
        tool_with_tool_call_list=[availability_tool(tool)], tool_call_list=[tool], **fields
    )


SLOTS = json.dumps(
    {"slots": ["2026-11-26T10:00:00-05:00", "2026-11-27T14:00:00-05:00"]}, separators=(",", ":")
)


def phone(call_id: str, created: dt.datetime, status: str, **fields) -> LiveCall:
    return LiveCall(
        call_id,
        created,
        status,
        phone_call_provider="twilio",
        phone_call_transport="pstn",
        customer=CUSTOMER,
        **fields,
    )


def sequence_inbound_saved(out: Out) -> None:
    """Inbound phone call, saved assistant Ava, explicit serverMessages (transcripts on)."""
    started = utc(2026, 11, 20, 14, 0, 0)
    live = phone(
        uid("c", 101),
        at(started, -3.2),
        "queued",
        type="inboundPhoneCall",
        assistant_id=ASSISTANT_AVA,
        phone_number_id=PHONE_MAIN,
    )
    seq = Sequence(
        out,
        "inbound-phone-saved-assistant",
        live,
        Conversation(started),
        customer=CreateCustomerDto(**CUSTOMER),
        phone_number=MAIN_LINE,
        assistant=AVA,
    )
    seq.status("queued", -3.2)
    seq.status("ringing", -2.0)
    seq.status("in-progress", 0.0, started_at=started)
    seq.say(
        "bot",
        "Thank you for calling Riverside Dental, this is Ava. How can I help you today?",
        0.6,
        4.2,
        turn=0,
    )
    seq.say("user", "Hi, I'd like to book a cleaning for next week.", 5.0, 7.6, turn=1)
    tool = availability_call(101)
    seq.emit(tool_calls(tool, type="tool-calls", **seq.context(8.4)))
    seq.convo.tool_call(tool, 8.4)
    seq.convo.tool_result(tool, SLOTS, 9.1)
    seq.conversation_update(9.2)
    seq.say(
        "bot", "I have Thursday at 10 a.m. or Friday at 2 p.m. Which works better for you?", 9.6, 13.4, turn=2
    )
    seq.say("user", "Thursday at ten, please.", 14.2, 15.8, turn=3)
    seq.say(
        "bot",
        "Great, you're booked for Thursday, November 26th at 10 a.m. Anything else?",
        16.4,
        20.6,
        turn=4,
    )
    seq.say("user", "No, that's everything. Thanks!", 21.4, 23.0, turn=5)
    seq.say("bot", "You're welcome. Have a great day. Goodbye!", 23.6, 26.0, turn=6)
    seq.end(
        27.0,
        "customer-ended-call",
        2.5,
        analysis=Analysis(
            summary="Jordan Lee booked a cleaning for Thursday, November 26th at 10 a.m.",
            structured_data={"intent": "book", "service": "cleaning", "slot": "2026-11-26T10:00:00-05:00"},
            success_evaluation="true",
        ),
    )


def sequence_web_transient(out: Out) -> None:
    """Web call with a transient assistant (call.assistant, no assistantId) carrying the tenant token."""
    started = utc(2026, 11, 20, 15, 0, 0)
    live = LiveCall(uid("c", 102), at(started, -1.1), "queued", type="webCall", assistant=TRANSIENT)
    seq = Sequence(
        out,
        "web-transient-assistant",
        live,
        Conversation(started),
        assistant_version=None,
        assistant=TRANSIENT,
    )
    seq.status("in-progress", 0.0, started_at=started)
    seq.say("bot", "Hi, this is Ava from Riverside Dental. How can I help?", 0.4, 3.1, turn=0)
    seq.say("user", "Can I move my appointment to Friday?", 4.0, 6.2, turn=1)
    seq.say("bot", "Sure, I've moved it to Friday at 2 p.m.", 7.0, 9.4, turn=2)
    seq.end(10.5, "customer-ended-call", 1.5)


def sequence_squad(out: Out) -> None:
    """Inbound phone call to a squad: call.squadId and no assistantId; assistant transcripts and
    bot lines name the member speaking (top-level assistantId / assistantName)."""
    started = utc(2026, 11, 20, 16, 0, 0)
    live = phone(
        uid("c", 103),
        at(started, -2.4),
        "ringing",
        type="inboundPhoneCall",
        squad_id=SQUAD_ID,
        phone_number_id=PHONE_SQUAD,
    )
    seq = Sequence(
        out,
        "inbound-phone-squad",
        live,
        Conversation(started, "You are the Riverside Dental front desk squad."),
        assistant_version=None,
        customer=CreateCustomerDto(**CUSTOMER),
        phone_number=SQUAD_LINE,
    )
    nora = {"assistant_id": ASSISTANT_NORA, "assistant_name": "Nora"}
    ben = {"assistant_id": ASSISTANT_BEN, "assistant_name": "Ben"}
    seq.status("in-progress", 0.0, started_at=started)
    seq.say("bot", "Riverside Dental, this is Nora. How can I help?", 0.5, 3.0, turn=0, speech=False, **nora)
    seq.say("user", "I have a question about my bill.", 3.8, 5.6, turn=1, speech=False)
    seq.say("bot", "Let me connect you with our billing specialist.", 6.2, 8.4, turn=2, speech=False, **nora)
    seq.emit(
        ServerMessageTransferUpdate(
            type="transfer-update",
            destination={"type": "assistant", "assistantName": "Ben"},
            from_assistant=CreateAssistantDto(name="Nora"),
            to_assistant=CreateAssistantDto(name="Ben"),
            **seq.context(8.9),
        )
    )
    seq.say(
        "bot",
        "Hi, this is Ben from billing. Can I have your date of birth?",
        9.4,
        12.6,
        turn=3,
        speech=False,
        **ben,
    )
    seq.say("user", "March 3rd, 1985.", 13.4, 15.0, turn=4, speech=False)
    seq.say(
        "bot",
        "Thanks. Your balance of 40 dollars was paid yesterday, so you're all set.",
        15.8,
        20.2,
        turn=5,
        speech=False,
        **ben,
    )
    seq.end(21.5, "customer-ended-call", 1.5)


def sequence_default_server_messages(out: Out) -> None:
    """Outbound phone call, saved assistant Max with Vapi's DEFAULT serverMessages: no transcript
    messages, so the lines are only in conversation-update and the report."""
    started = utc(2026, 11, 20, 17, 0, 0)
    live = phone(
        uid("c", 104),
        at(started, -6.0),
        "queued",
        type="outboundPhoneCall",
        assistant_id=ASSISTANT_MAX,
        phone_number_id=PHONE_OUTBOUND,
    )
    seq = Sequence(
        out,
        "outbound-phone-default-server-messages",
        live,
        Conversation(started, "You are Max. Confirm tomorrow's appointment."),
        customer=CreateCustomerDto(**CUSTOMER),
        phone_number=REMINDER_LINE,
        assistant=MAX,
    )
    seq.status("queued", -6.0)
    seq.status("ringing", -4.5)
    seq.status("in-progress", 0.0, started_at=started)
    seq.say(
        "bot",
        "Hi, this is Max from Riverside Dental, calling about your appointment tomorrow at 9 a.m.",
        1.2,
        6.0,
        turn=0,
        transcripts=False,
    )
    # The callee talks over the next line: user-interrupted, and that line stops early.
    seq.speech("started", "bot", 1, 6.6)
    seq.speech("started", "user", 2, 7.3)
    seq.emit(ServerMessageUserInterrupted(type="user-interrupted", turn_id="turn-104-1", **seq.context(7.4)))
    seq.speech("stopped", "bot", 1, 7.5)
    seq.line("bot", "Can you still make it, or would you like to", 6.6, 7.5)
    seq.speech("stopped", "user", 2, 8.7)
    seq.line("user", "Yes, I'll be there.", 7.3, 8.7)
    seq.say("bot", "Perfect, see you tomorrow. Goodbye!", 9.3, 11.2, turn=3, transcripts=False)
    seq.end(12.0, "assistant-ended-call", 2.0)


# -- single messages ---------------------------------------------------------------------------

T = utc(2026, 11, 21, 9, 0, 0)  # the single fixtures' calls start here; each message is at T + 12 s


def inbound(n: int, status: str = "in-progress", *, with_timestamp: bool = True, **call_fields) -> dict:
    """Common fields of a single fixture: an inbound phone call to saved assistant Ava.
    A `call_fields` value None drops that field."""
    fields = {
        "type": "inboundPhoneCall",
        "assistant_id": ASSISTANT_AVA,
        "phone_number_id": PHONE_MAIN,
        "phone_call_provider": "twilio",
        "phone_call_transport": "pstn",
        "customer": CUSTOMER,
        **({} if status in ("scheduled", "queued", "ringing") else {"started_at": T}),
        **call_fields,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    live = LiveCall(uid("c", n), at(T, -3.0), status, **fields)
    live.set(status, at(T, 12.0))
    context = {
        "timestamp": epoch_ms(at(T, 12.0)) if with_timestamp else None,
        "call": live.call(),
        "phone_number": MAIN_LINE if fields.get("phone_number_id") == PHONE_MAIN else None,
        "customer": CreateCustomerDto(**fields["customer"]) if "customer" in fields else None,
    }
    return {k: v for k, v in context.items() if v is not None}


def short_conversation() -> Conversation:
    convo = Conversation(T)
    convo.bot("Thank you for calling Riverside Dental, this is Ava. How can I help you today?", 0.6, 4.2)
    convo.user("Hi, I'd like to book a cleaning for next week.", 5.0, 7.6)
    return convo


def ended_context(n: int) -> dict:
    """An end-of-call-report's fields besides the report itself: the call ended 16 s in."""
    context = inbound(n, "ended", ended_at=at(T, 16.0), ended_reason="customer-ended-call", cost=0.0819)
    return {**context, "timestamp": epoch_ms(at(T, 18.0)), "assistant": AVA}


def single_members(out: Out) -> None:
    """Each member of ServerMessageMessage at least once."""
    out.write(
        "assistant-request.json",
        ServerMessageAssistantRequest(
            type="assistant-request",
            assistant_version=None,  # "`null` for ... pre-resolution assistant-request messages"
            **inbound(1, "ringing", assistant_id=None),
        ),
    )
    out.write(
        "conversation-update.json",
        ServerMessageConversationUpdate(
            type="conversation-update", **short_conversation().snapshot(), **inbound(2)
        ),
    )
    full = short_conversation()
    full.bot("I have Thursday at 10 a.m. or Friday at 2 p.m. Which works better for you?", 8.4, 12.2)
    full.user("Thursday at ten, please. Thanks, bye.", 13.0, 15.1)
    ended = at(T, 16.0)
    out.write(
        "end-of-call-report.json",
        report(full, ended, "customer-ended-call", ended_context(3), recording_urls(uid("c", 3))),
    )
    stereo = f"https://storage.vapi.ai/{uid('c', 4)}-stereo.wav"
    out.write(
        "end-of-call-report--stereo-only-recording.json",
        report(
            full,
            ended,
            "customer-ended-call",
            ended_context(4),
            {"stereo_recording_url": stereo, "recording": Recording(stereo_url=stereo)},
        ),
    )
    out.write(
        "handoff-destination-request.json",
        ServerMessageHandoffDestinationRequest(
            type="handoff-destination-request",
            parameters={"destination": "billing", "reason": "question about a bill"},
            **inbound(5),
        ),
    )
    out.write("hang.json", ServerMessageHang(type="hang", **inbound(6)))
    out.write(
        "knowledge-base-request.json",
        ServerMessageKnowledgeBaseRequest(
            type="knowledge-base-request", **short_conversation().snapshot(), **inbound(7)
        ),
    )
    out.write(
        "model-output.json",
        ServerMessageModelOutput(
            type="model-output", output={"content": "I have Thursday"}, turn_id="turn-8-2", **inbound(8)
        ),
    )
    out.write(
        "phone-call-control.json",
        ServerMessagePhoneCallControl(
            type="phone-call-control",
            request="forward",
            destination={"type": "number", "number": "+15551239999"},
            **inbound(9),
        ),
    )
    out.write(
        "speech-update.json",
        ServerMessageSpeechUpdate(type="speech-update", status="started", role="user", turn=1, **inbound(10)),
    )
    out.write("tool-calls.json", tool_calls(availability_call(11), type="tool-calls", **inbound(11)))
    out.write(
        "tool-calls--no-type.json", tool_calls(availability_call(12), **inbound(12))
    )  # `type` is optional here
    out.write(
        "transfer-destination-request.json",
        ServerMessageTransferDestinationRequest(type="transfer-destination-request", **inbound(13)),
    )
    out.write(
        "transfer-update.json",
        ServerMessageTransferUpdate(
            type="transfer-update", destination={"type": "number", "number": "+15551239999"}, **inbound(14)
        ),
    )
    final = {
        "role": "user",
        "transcript_type": "final",
        "transcript": "Hi, I'd like to book a cleaning for next week.",
    }
    out.write(
        "transcript--partial.json",
        ServerMessageTranscript(
            type="transcript",
            role="user",
            transcript_type="partial",
            transcript="Hi, I'd like to book",
            **inbound(15),
        ),
    )
    out.write("transcript--final.json", ServerMessageTranscript(type="transcript", **final, **inbound(16)))
    out.write(
        "transcript-final-typed-name.json",
        ServerMessageTranscript(type='transcript[transcriptType="final"]', **final, **inbound(17)),
    )
    out.write(
        "user-interrupted.json",
        ServerMessageUserInterrupted(type="user-interrupted", turn_id="turn-18-2", **inbound(18)),
    )
    out.write(
        "language-change-detected.json",
        ServerMessageLanguageChangeDetected(type="language-change-detected", language="es", **inbound(19)),
    )
    out.write(
        "voice-input.json",
        ServerMessageVoiceInput(type="voice-input", input="I have Thursday at 10 a.m.", **inbound(20)),
    )
    out.write(
        "assistant.speechStarted.json",
        ServerMessageAssistantSpeech(
            type="assistant.speechStarted",
            text="I have Thursday at 10 a.m. or Friday at 2 p.m.",
            turn=2,
            source="model",
            timing={
                "type": "word-progress",
                "wordsSpoken": 4,
                "totalWords": 11,
                "segment": "I have Thursday at",
                "segmentDurationMs": 820,
            },
            **inbound(21),
        ),
    )
    out.write(
        "voice-request.json",
        ServerMessageVoiceRequest(
            type="voice-request", text="I have Thursday at 10 a.m.", sample_rate=24000, **inbound(22)
        ),
    )
    out.write(
        "call.endpointing.request.json",
        ServerMessageCallEndpointingRequest(
            type="call.endpointing.request", **short_conversation().snapshot(), **inbound(23)
        ),
    )
    chat = Chat(
        id=CHAT_ID,
        org_id=ORG_ID,
        assistant_id=ASSISTANT_AVA,
        name="Website chat",
        input="Do you take walk-ins?",
        created_at=T,
        updated_at=at(T, 2.0),
    )
    out.write(
        "chat.created.json", ServerMessageChatCreated(type="chat.created", chat=chat, timestamp=epoch_ms(T))
    )
    out.write(
        "chat.deleted.json",
        ServerMessageChatDeleted(type="chat.deleted", chat=chat, timestamp=epoch_ms(at(T, 60.0))),
    )

    def session(status: str, seconds: float) -> dict:
        return {
            "session": Session(
                id=SESSION_ID,
                org_id=ORG_ID,
                name="Jordan Lee",
                status=status,
                assistant_id=ASSISTANT_AVA,
                customer=CUSTOMER,
                created_at=T,
                updated_at=at(T, seconds),
            ),
            "timestamp": epoch_ms(at(T, seconds)),
        }

    out.write(
        "session.created.json", ServerMessageSessionCreated(type="session.created", **session("active", 0.0))
    )
    out.write(
        "session.updated.json", ServerMessageSessionUpdated(type="session.updated", **session("active", 30.0))
    )
    out.write(
        "session.deleted.json",
        ServerMessageSessionDeleted(type="session.deleted", **session("completed", 90.0)),
    )
    out.write("call.deleted.json", ServerMessageCallDeleted(type="call.deleted", **inbound(24, "ended")))
    out.write(
        "call.delete.failed.json",
        ServerMessageCallDeleteFailed(type="call.delete.failed", **inbound(25, "deletion-failed")),
    )
    out.write(
        "call.artifact.upload.json",
        ServerMessageCallArtifactUpload(
            type="call.artifact.upload",
            artifacts=[
                CallArtifactUploadItem(type=kind, success=kind != "pcap")
                for kind in ("recording-mono", "recording-stereo", "log", "pcap")
            ],
            **inbound(26, "ended"),
        ),
    )
    contact = CampaignContact(
        id=CONTACT_ID,
        campaign_id=CAMPAIGN_ID,
        org_id=ORG_ID,
        number=CUSTOMER["number"],
        name=CUSTOMER["name"],
        created_at=at(T, -86400.0),
    )
    out.write(
        "campaign.predial.json",
        ServerMessageCampaignPredial(
            type="campaign.predial", campaign_id=CAMPAIGN_ID, contact=contact, timestamp=epoch_ms(T)
        ),
    )


def single_statuses(out: Out) -> None:
    """status-update for every value of the SDK's status enum: inbound phone, saved assistant;
    `scheduled` is an outbound call with a schedulePlan, the only kind that is scheduled."""

    def status(n: int, value: str, call_fields: dict | None = None, **fields) -> None:
        message = ServerMessageStatusUpdate(
            type="status-update", status=value, **fields, **inbound(n, value, **(call_fields or {}))
        )
        out.write(f"status-update--{value}.json", message)

    schedule = SchedulePlan(earliest_at=at(T, 3600.0), latest_at=at(T, 7200.0))
    outbound = {"type": "outboundPhoneCall", "assistant_id": ASSISTANT_MAX, "phone_number_id": PHONE_OUTBOUND}
    status(30, "scheduled", {**outbound, "schedule_plan": schedule})
    status(31, "queued")
    status(32, "ringing")
    status(33, "in-progress")
    convo = short_conversation()
    status(
        34,
        "forwarding",
        destination={"type": "number", "number": "+15551239999", "message": "Transferring you now."},
        transcript=convo.transcript(),
        summary="The caller asked to speak to a person.",
        **convo.snapshot(),
    )
    status(
        35,
        "ended",
        {"ended_at": at(T, 12.0), "ended_reason": "customer-ended-call"},
        ended_reason="customer-ended-call",
    )
    status(36, "not-found")
    status(37, "deletion-failed")


def single_call_shapes(out: Out) -> None:
    """The call shapes the project must resolve (README.md, "Call shapes"); status-update in-progress
    unless the name says otherwise."""

    def status(
        name: str, n: int, *, fields=None, with_timestamp=True, **call_fields
    ) -> ServerMessageStatusUpdate:
        context = inbound(n, with_timestamp=with_timestamp, **call_fields)
        message = ServerMessageStatusUpdate(
            type="status-update", status="in-progress", **(fields or {}), **context
        )
        out.write(f"status-update--{name}.json", message)
        return message

    status(
        "outbound-phone",
        40,
        type="outboundPhoneCall",
        assistant_id=ASSISTANT_MAX,
        phone_number_id=PHONE_OUTBOUND,
    )
    web = {
        "phone_number_id": None,
        "phone_call_provider": None,
        "phone_call_transport": None,
        "customer": None,
    }
    status("web-call", 41, type="webCall", **web)
    status("websocket-call", 42, type="vapi.websocketCall", **web)
    transient = {"assistant_version": None, "assistant": TRANSIENT}
    status(
        "transient-assistant",
        43,
        fields=transient,
        type="webCall",
        assistant_id=None,
        assistant=TRANSIENT,
        **web,
    )
    status(
        "squad",
        44,
        fields={"assistant_version": None},
        assistant_id=None,
        squad_id=SQUAD_ID,
        phone_number_id=PHONE_SQUAD,
    )
    status(
        "workflow",
        45,
        fields={"assistant_version": None},
        assistant_id=None,
        workflow_id=WORKFLOW_ID,
        phone_number_id=PHONE_UNASSIGNED,
    )
    status("phone-number-only", 46, assistant_id=None, phone_number_id=PHONE_UNASSIGNED)
    # one saved assistant for every tenant: the tenant comes per call, in the overrides
    status(
        "shared-assistant-overrides",
        55,
        type="webCall",
        assistant_id=ASSISTANT_SHARED,
        assistant_overrides=AssistantOverrides(metadata={"voxanne_tenant": TENANT_TOKEN}),
        **web,
    )
    status("no-customer", 47, customer=None)
    status("no-call-type", 48, type=None)
    modern = status("no-timestamp", 49, with_timestamp=False)

    def final(text: str) -> dict:
        return {
            "type": 'transcript[transcriptType="final"]',
            "role": "user",
            "transcript_type": "final",
            "transcript": text,
        }

    out.write(
        "transcript--squad-member.json",
        ServerMessageTranscript(
            **{**final("Hi, this is Ben from billing."), "role": "assistant"},
            assistant_id=ASSISTANT_BEN,
            assistant_name="Ben",
            assistant_version=None,
            **inbound(50, assistant_id=None, squad_id=SQUAD_ID, phone_number_id=PHONE_SQUAD),
        ),
    )
    out.write(
        "transcript--no-timestamp.json",
        ServerMessageTranscript(**final("Thursday at ten, please."), **inbound(51, with_timestamp=False)),
    )
    out.write("transcript--final-empty-text.json", ServerMessageTranscript(**final(""), **inbound(52)))

    # Legacy: npm <= 0.5.0 / PyPI 0.1.0 type `timestamp` as an ISO-8601 string, which the 3.0.0
    # models refuse (float), so these two are dicts made from 3.0.0 messages and checked against
    # the old SDKs. They leave out `phoneNumber`, whose Twilio form there requires the auth token.
    iso = at(T, 12.0).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    legacy = envelope(modern)
    legacy["message"]["call"]["id"] = uid("c", 53)
    legacy["message"]["timestamp"] = iso
    del legacy["message"]["phoneNumber"]
    out.write_doc("status-update--legacy-iso-timestamp.json", legacy, LEGACY)
    legacy = envelope(
        ServerMessageTranscript(**final("Thursday at ten, please."), **inbound(54, with_timestamp=False))
    )
    legacy["message"].update(type="transcript[transcriptType='final']", timestamp=iso)
    del legacy["message"]["phoneNumber"]
    out.write_doc("transcript-final-typed-name--legacy-single-quotes.json", legacy, LEGACY_NPM_ONLY)


# -- the large report --------------------------------------------------------------------------

LARGE_LINES = 2700
LARGE_FILLER = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore. "
)


def large_text(i: int) -> str:
    """Line i (0-based): "Line NNNN of 2700. " and the filler repeated, cut to 400 characters."""
    return (f"Line {i + 1:04d} of {LARGE_LINES}. " + LARGE_FILLER * 4)[:400]


def large_report(root: pathlib.Path) -> None:
    """A 3-hour call (README.md, "The large report"): 2700 lines, one every 4 s, bot first."""
    started = utc(2026, 11, 20, 18, 0, 0)
    convo = Conversation(started)
    for i in range(LARGE_LINES):
        (convo.bot if i % 2 == 0 else convo.user)(large_text(i), 4.0 * i + 1.0, 4.0 * i + 4.0)
    ended = at(started, 10800.0)
    live = phone(
        uid("c", 900),
        at(started, -3.0),
        "ended",
        type="inboundPhoneCall",
        assistant_id=ASSISTANT_AVA,
        phone_number_id=PHONE_MAIN,
    )
    live.set(
        "ended",
        at(ended, 3.0),
        started_at=started,
        ended_at=ended,
        ended_reason="exceeded-max-duration",
        cost=0.0819,
    )
    context = {
        "timestamp": epoch_ms(at(ended, 3.0)),
        "call": live.call(),
        "customer": CreateCustomerDto(**CUSTOMER),
        "phone_number": MAIN_LINE,
        "assistant": AVA,
    }
    message = report(convo, ended, "exceeded-max-duration", context, recording_urls(live.id))
    Out(root).write("end-of-call-report--large.json", message)


# -- replies -----------------------------------------------------------------------------------


def replies(out: Out) -> None:
    """replies/<fixture>: the body the product answers that reply-expecting fixture with (README
    "Replies"; the registry of tests/it/tests/sdk_messages.rs), built from the SDK's response
    type of its message type (`ServerMessageResponse<Type>`), which tests/sdk/check holds it to.
    voice-request has none: Vapi wants raw PCM there, and the answer is an empty body."""
    no_app = "no {} is configured for this assistant".format
    for fixture, response in [
        ("assistant-request.json", ServerMessageResponseAssistantRequest(assistant_id=ASSISTANT_AVA)),
        ("tool-calls.json", ServerMessageResponseToolCalls(error=no_app("tool handler"))),
        ("tool-calls--no-type.json", ServerMessageResponseToolCalls(error=no_app("tool handler"))),
        (
            "transfer-destination-request.json",
            ServerMessageResponseTransferDestinationRequest(error=no_app("transfer destination")),
        ),
        (
            "handoff-destination-request.json",
            ServerMessageResponseHandoffDestinationRequest(destination={}, error=no_app("handoff destination")),
        ),
        ("knowledge-base-request.json", ServerMessageResponseKnowledgeBaseRequest(documents=[])),
        ("call.endpointing.request.json", ServerMessageResponseCallEndpointingRequest(timeout_seconds=0.4)),
        ("campaign.predial.json", ServerMessageResponseCampaignPredial(eligible=False)),
    ]:
        assert (out.root / fixture).exists(), f"replies/{fixture} answers no fixture"
        out.write_doc(f"replies/{fixture}", wire(response))


# -- calls, as Vapi's API returns them -------------------------------------------------------


def calls(out: Out) -> None:
    """calls/<sequence>.json: each sequence's call as Vapi's API returns it (`GET /call/{id}`),
    the SDK's `Call` built from the sequence's end-of-call report: the report's call, ended, with
    the report's own fields, which `Call` carries under the same names. `voxanne-relay
    reconcile` is tested against a fake API serving them (tests/it/tests/sdk_messages.rs)."""
    own = ("endedReason", "startedAt", "endedAt", "cost", "costs", "analysis", "artifact")
    for sequence in sorted(p for p in (out.root / "sequences").iterdir() if p.is_dir()):
        report = json.loads(sorted(sequence.glob("*.json"))[-1].read_text())["message"]
        assert report["type"] == "end-of-call-report", f"{sequence.name} does not end with its report"
        fields = {**report["call"], "status": "ended", **{k: report[k] for k in own if k in report}}
        out.write_doc(f"calls/{sequence.name}.json", wire(Call.model_validate(fields)))


def build(out_dir: pathlib.Path, large_dir: pathlib.Path | None = None) -> None:
    out = Out(out_dir)
    single_members(out)
    single_statuses(out)
    single_call_shapes(out)
    sequence_inbound_saved(out)
    sequence_web_transient(out)
    sequence_squad(out)
    sequence_default_server_messages(out)
    replies(out)
    calls(out)
    out.write_list()
    if large_dir:
        large_report(large_dir)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=REPO / "tests/fixtures/sdk", help="the committed fixtures' folder"
    )
    parser.add_argument(
        "--large", type=pathlib.Path, help="also write end-of-call-report--large.json (not committed) here"
    )
    args = parser.parse_args()
    build(args.out, args.large)


if __name__ == "__main__":
    main()
