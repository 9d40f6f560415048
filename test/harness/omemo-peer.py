#!/usr/bin/python3
# An OMEMO 0.3 client that is not ours, for the XMPP encryption tests (issue 26):
# Debian's python3-omemo with the python3-oldmemo backend on python3-slixmpp.
# test/harness/omemo-peer.ts starts it and talks to it in JSON lines:
#
#   stdin  {"cmd": "send", "to": JID, "body": TEXT, "id": ID, "type": "chat"}
#          {"cmd": "send-clear", "to": JID, "body": TEXT, "id": ID}
#          {"cmd": "devices", "jid": JID}      -> {"event": "devices", "jid", "ids", "keys"} (the active ones;
#                                                 keys: device id -> Curve25519 identity key in hex, as clients show it)
#          {"cmd": "muc-create", "room": JID, "nick": NICK, "members": [JID]}  (members-only, non-anonymous)
#          {"cmd": "send", "to": ROOM, "type": "groupchat", "body": TEXT}     (to every occupant's devices)
#          {"cmd": "stop"}
#   stdout {"event": "ready", "deviceId": N, "fingerprint": HEX}
#          {"event": "message", "from", "id", "body", "encrypted", "senderDevice", "replace"}
#          {"event": "sent", "id", "at": WALL CLOCK MS} | {"event": "error", "cmd", "error"}
#
# Its OMEMO store is a JSON file (argv: config JSON with jid, password, host,
# port, resource, store), so a restarted peer is the same device.
import asyncio
import base64
import json
import logging
import os
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict, FrozenSet, Optional

try:
    import omemo
    import oldmemo
    import oldmemo.etree
    from omemo.storage import Just, Maybe, Nothing, Storage
    from omemo.types import DeviceInformation, JSONType, TrustLevel
    import slixmpp
    import xeddsa
except ImportError as e:  # named so the test says which Debian package to install
    print(json.dumps({"event": "fatal", "error": f"missing Python module ({e}): apt-get install -y python3-omemo python3-oldmemo python3-twomemo python3-slixmpp python3-xmlschema"}), flush=True)
    sys.exit(3)

NS = oldmemo.oldmemo.NAMESPACE
PUBSUB = "http://jabber.org/protocol/pubsub"
DEVICE_LIST_NODE = f"{NS}.devicelist"
FALLBACK = "I sent you an OMEMO encrypted message but your client doesn't seem to support that."


def emit(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class FileStorage(Storage):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.data: Dict[str, JSONType] = {}
        if os.path.exists(path):
            with open(path, encoding="utf8") as f:
                self.data = json.load(f)

    def _flush(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf8") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = value
        self._flush()

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)
        self._flush()


def publish_options() -> ET.Element:
    opts = ET.Element(f"{{{PUBSUB}}}publish-options")
    x = ET.SubElement(opts, "{jabber:x:data}x", type="submit")
    for var, value, typ in (("FORM_TYPE", f"{PUBSUB}#publish-options", "hidden"), ("pubsub#access_model", "open", None)):
        field = ET.SubElement(x, "{jabber:x:data}field", var=var)
        if typ:
            field.set("type", typ)
        ET.SubElement(field, "{jabber:x:data}value").text = value
    return opts


class Peer(omemo.SessionManager):
    xmpp: "Client"

    async def _pubsub(self, typ: str, to: Optional[str], pubsub: ET.Element) -> ET.Element:
        iq = self.xmpp.Iq()
        iq["type"] = typ
        if to:
            iq["to"] = to
        iq.xml.append(pubsub)
        result = await iq.send(timeout=20)
        return result.xml

    async def _publish(self, node: str, payload: ET.Element) -> None:
        pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
        publish = ET.SubElement(pubsub, f"{{{PUBSUB}}}publish", node=node)
        ET.SubElement(publish, f"{{{PUBSUB}}}item", id="current").append(payload)
        pubsub.append(publish_options())
        await self._pubsub("set", None, pubsub)

    async def _items(self, jid: str, node: str) -> Optional[ET.Element]:
        pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
        ET.SubElement(pubsub, f"{{{PUBSUB}}}items", node=node, max_items="1")
        try:
            result = await self._pubsub("get", jid, pubsub)
        except slixmpp.exceptions.IqError as e:
            if e.iq["error"]["condition"] == "item-not-found":
                return None
            raise
        item = result.find(f".//{{{PUBSUB}}}item")
        if item is None or len(item) == 0:
            return None
        return item[0]

    async def _upload_bundle(self, bundle: omemo.Bundle) -> None:
        assert isinstance(bundle, oldmemo.oldmemo.BundleImpl)
        await self._publish(f"{NS}.bundles:{bundle.device_id}", oldmemo.etree.serialize_bundle(bundle))

    async def _download_bundle(self, namespace: str, bare_jid: str, device_id: int) -> omemo.Bundle:
        try:
            el = await self._items(bare_jid, f"{NS}.bundles:{device_id}")
        except Exception as e:
            raise omemo.BundleDownloadFailed(str(e)) from e
        if el is None:
            raise omemo.BundleNotFound(f"no bundle for {bare_jid}/{device_id}")
        return oldmemo.etree.parse_bundle(el, bare_jid, device_id)

    async def _delete_bundle(self, namespace: str, device_id: int) -> None:
        pubsub = ET.Element(f"{{{PUBSUB}}}pubsub")
        ET.SubElement(pubsub, f"{{{PUBSUB}}}delete", node=f"{NS}.bundles:{device_id}")
        try:
            await self._pubsub("set", None, pubsub)
        except Exception:
            pass

    async def _upload_device_list(self, namespace: str, device_list: Dict[int, Optional[str]]) -> None:
        await self._publish(DEVICE_LIST_NODE, oldmemo.etree.serialize_device_list(device_list))

    async def _download_device_list(self, namespace: str, bare_jid: str) -> Dict[int, Optional[str]]:
        try:
            el = await self._items(bare_jid, DEVICE_LIST_NODE)
        except Exception as e:
            raise omemo.DeviceListDownloadFailed(str(e)) from e
        return {} if el is None else oldmemo.etree.parse_device_list(el)

    async def _evaluate_custom_trust_level(self, device: DeviceInformation) -> TrustLevel:
        # Blind trust, like Conversations before verification.
        return TrustLevel.TRUSTED if device.trust_level_name in ("blind", "trusted") else TrustLevel.DISTRUSTED

    async def _make_trust_decision(self, undecided: FrozenSet[DeviceInformation], identifier: Optional[str]) -> None:
        for device in undecided:
            await self.set_trust(device.bare_jid, device.identity_key, "blind")

    async def _send_message(self, message: omemo.Message, bare_jid: str) -> None:
        msg = self.xmpp.make_message(mto=bare_jid, mtype="chat")
        msg.xml.append(oldmemo.etree.serialize_message(message))
        msg.xml.append(ET.Element("{urn:xmpp:hints}store"))
        msg.send()


class Client(slixmpp.ClientXMPP):
    def __init__(self, cfg: Dict[str, Any]) -> None:
        super().__init__(f"{cfg['jid']}/{cfg.get('resource', 'peer')}", cfg["password"])
        self.cfg = cfg
        self.peer: Optional[Peer] = None
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0045")
        self.rooms: Dict[str, str] = {}
        self.add_event_handler("session_start", self.on_session)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("disconnected", lambda _e: emit({"event": "disconnected"}))
        self.add_event_handler("failed_auth", lambda _e: emit({"event": "fatal", "error": "authentication failed"}))

    async def on_session(self, _event: Any) -> None:
        try:
            self["xep_0030"].add_feature(f"{DEVICE_LIST_NODE}+notify")
            self.send_presence()
            await self.get_roster()
            storage = FileStorage(self.cfg["store"])
            # create() builds the instance and already talks PEP: the client is set on the class (one per process).
            Peer.xmpp = self
            self.peer = await Peer.create([oldmemo.Oldmemo(storage)], storage, self.boundjid.bare, None, "blind")
            await self.peer.after_history_sync()
            own, _ = await self.peer.get_own_device_information()
            # python-omemo keeps the Ed25519 form; clients (and the bridge) show the Curve25519 form.
            emit({"event": "ready", "deviceId": own.device_id, "fingerprint": xeddsa.ed25519_pub_to_curve25519_pub(own.identity_key).hex()})
        except Exception as e:  # reported, not swallowed
            logging.exception("session setup")
            emit({"event": "fatal", "error": f"OMEMO setup failed: {e!r}"})

    def real_jid(self, room: str, nick: str) -> Optional[str]:
        jid = self["xep_0045"].get_jid_property(slixmpp.JID(room), nick, "jid")
        return slixmpp.JID(jid).bare if jid else None

    def occupants(self, room: str) -> FrozenSet[str]:
        jids = (self.real_jid(room, nick) for nick in self["xep_0045"].get_roster(slixmpp.JID(room)))
        return frozenset(j for j in jids if j and j != self.boundjid.bare)

    async def on_message(self, msg: slixmpp.Message) -> None:
        if msg["type"] not in ("chat", "normal", "", "groupchat"):
            return
        groupchat = msg["type"] == "groupchat"
        if groupchat and msg["from"].resource == self.rooms.get(msg["from"].bare):
            return  # our own reflection
        event = msg.xml.find("{http://jabber.org/protocol/pubsub#event}event")
        if event is not None and self.peer is not None:
            items = event.find("{http://jabber.org/protocol/pubsub#event}items")
            if items is not None and items.get("node") == DEVICE_LIST_NODE:
                el = items.find(".//{http://jabber.org/protocol/pubsub#event}item")
                if el is not None and len(el) > 0:
                    ids = oldmemo.etree.parse_device_list(el[0])
                    await self.peer.update_device_list(NS, msg["from"].bare, ids)
                    emit({"event": "device-list", "jid": msg["from"].bare, "ids": sorted(ids)})
            return
        replace = msg.xml.find("{urn:xmpp:message-correct:0}replace")
        base = {"from": str(msg["from"]), "id": msg["id"], "replace": replace.get("id") if replace is not None else None, "type": msg["type"]}
        sender = self.real_jid(msg["from"].bare, msg["from"].resource) if groupchat else msg["from"].bare
        encrypted = msg.xml.find(f"{{{NS}}}encrypted")
        if encrypted is None:
            if msg["body"]:
                emit({**base, "event": "message", "body": msg["body"], "encrypted": False})
            return
        if self.peer is None:
            emit({**base, "event": "undecryptable", "error": "not ready"})
            return
        base["rids"] = sorted(int(k.get("rid") or 0) for k in encrypted.iter(f"{{{NS}}}key"))
        try:
            if sender is None:
                raise ValueError(f"no real JID for {msg['from']}")
            parsed = await oldmemo.etree.parse_message(encrypted, sender, self.boundjid.bare, self.peer)
            plaintext, device, _ = await self.peer.decrypt(parsed)
        except Exception as e:
            emit({**base, "event": "undecryptable", "error": repr(e)})
            return
        if plaintext is None:
            return  # an empty OMEMO message (session upkeep)
        emit({**base, "event": "message", "body": plaintext.decode("utf8"), "encrypted": True, "senderDevice": device.device_id, "fallback": msg["body"]})

    async def send_encrypted(self, cmd: Dict[str, Any]) -> None:
        assert self.peer is not None
        to = cmd["to"]
        recipients = self.occupants(to) if cmd.get("type") == "groupchat" else frozenset([to])
        # python-omemo encrypts to the device lists it has stored; fetch the recipients' first.
        for jid in recipients:
            await self.peer.refresh_device_list(NS, jid)
        messages, errors = await self.peer.encrypt(recipients, {NS: cmd["body"].encode("utf8")})
        msg = self.make_message(mto=to, mtype=cmd.get("type", "chat"), mbody=FALLBACK)
        if cmd.get("id"):
            msg["id"] = cmd["id"]
        for message in messages:
            msg.xml.append(oldmemo.etree.serialize_message(message))
        if cmd.get("replace"):
            ET.SubElement(msg.xml, "{urn:xmpp:message-correct:0}replace", id=cmd["replace"])
        ET.SubElement(msg.xml, "{urn:xmpp:eme:0}encryption", namespace=NS, name="OMEMO")
        ET.SubElement(msg.xml, "{urn:xmpp:hints}store")
        at = time.time() * 1000
        msg.send()
        emit({"event": "sent", "id": msg["id"], "at": at, "errors": [repr(e) for e in errors]})

    async def command(self, cmd: Dict[str, Any]) -> None:
        name = cmd.get("cmd")
        try:
            if name == "send":
                await self.send_encrypted(cmd)
            elif name == "send-clear":
                msg = self.make_message(mto=cmd["to"], mtype="chat", mbody=cmd["body"])
                if cmd.get("id"):
                    msg["id"] = cmd["id"]
                at = time.time() * 1000
                msg.send()
                emit({"event": "sent", "id": msg["id"], "at": at})
            elif name == "muc-create":
                room = slixmpp.JID(cmd["room"])
                await self["xep_0045"].join_muc_wait(room, cmd["nick"], maxstanzas=0, timeout=20)
                self.rooms[room.bare] = cmd["nick"]
                form = await self["xep_0045"].get_room_config(room)
                values = {"muc#roomconfig_membersonly": True, "muc#roomconfig_whois": "anyone", "muc#roomconfig_persistentroom": True}
                for var, value in values.items():
                    if var in form.get_fields():
                        form.get_fields()[var].set_value(value)
                await self["xep_0045"].set_room_config(room, form)
                for member in cmd.get("members", []):
                    await self["xep_0045"].set_affiliation(room, "member", jid=slixmpp.JID(member))
                emit({"event": "muc-ready", "room": room.bare})
            elif name == "occupants":
                emit({"event": "occupants", "room": cmd["room"], "jids": sorted(self.occupants(cmd["room"]))})
            elif name == "devices":
                assert self.peer is not None
                await self.peer.refresh_device_list(NS, cmd["jid"])
                infos = await self.peer.get_device_information(cmd["jid"])
                # Active: on the device list now (python-omemo remembers devices that left it, inactive).
                active = [d for d in infos if any(on for ns, on in d.active if ns == NS)]
                emit({"event": "devices", "jid": cmd["jid"], "ids": sorted(d.device_id for d in active), "keys": {str(d.device_id): xeddsa.ed25519_pub_to_curve25519_pub(d.identity_key).hex() for d in active}})
            elif name == "stop":
                self.disconnect()
                emit({"event": "stopped"})
            else:
                emit({"event": "error", "cmd": name, "error": "unknown command"})
        except Exception as e:
            logging.exception("command %s", name)
            emit({"event": "error", "cmd": name, "error": repr(e)})


async def read_commands(client: Client) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            client.disconnect()
            return
        if line.strip():
            await client.command(json.loads(line))


def main() -> None:
    cfg = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    client = Client(cfg)
    client.connect((cfg["host"], int(cfg["port"])), disable_starttls=True, force_starttls=False)
    loop = asyncio.get_event_loop()
    # Kept referenced: an unreferenced task can be collected while it waits for stdin.
    reader = loop.create_task(read_commands(client))
    loop.run_until_complete(client.disconnected)
    reader.cancel()


if __name__ == "__main__":
    main()
