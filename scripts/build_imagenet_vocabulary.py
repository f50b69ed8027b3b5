"""Build the readable ImageNet-1k vocabulary and its knowledge cards from WordNet 3.0 (run once; outputs committed).

Inputs
- the class list of the `efficientnet-lite3` asset (`cielr setup --only efficientnet-lite3`): one line per
  class in ILSVRC-2012 order, each the lemma list of one WordNet 3.0 noun synset (the file has no synset ids);
- WordNet 3.0's database files `data.noun` and `index.noun`: on Debian/Ubuntu `apt-get install wordnet-base`
  puts them in /usr/share/wordnet (WordNet licence: free use with the Princeton copyright notice); pass
  another folder with --wordnet.

Outputs
- tools/embedded/imagenet_vocabulary.json: per class its wnid, its lemma list, one display label, synonyms
  for free-text look-up and the COCO-80 label it falls under (or null);
- prompts/v1/imagenet_cards.json: display label -> a knowledge card of at most 200 characters (the WordNet
  gloss, "a kind of <hypernym>" and the COCO class it counts as), or a reviewed hand-written card.

How classes become synsets: a line names every noun synset whose lemma list it equals; ILSVRC orders its
classes by synset id, so the ids must increase with the line number, which settles all but 41 classes.
`SENSES` picks those by the sense the class's photos show. The COCO label of a class is that of the nearest
WordNet ancestor in `COCO_ANCHORS` (dog breeds -> dog, grouse -> bird, sports car -> car), corrected by
`COCO_OVERRIDES` where the hypernyms disagree with how COCO annotates (a police van is a car, a dingo a dog).

Usage: python scripts/build_imagenet_vocabulary.py [--wordnet DIR] [--labels FILE] [--check]
(--check rebuilds and exits 1 when the committed files differ).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from cielr_agent.tools.embedded.coco_detection import COCO_LABELS  # noqa: E402

VOCABULARY_JSON = ROOT / "tools" / "embedded" / "imagenet_vocabulary.json"
CARDS_JSON = ROOT / "prompts" / "v1" / "imagenet_cards.json"
MAX_CARD = 200

# class index -> wnid, for the 41 classes whose lemma list names neighbouring synsets (see the module doc)
SENSES = {
    102: "n01872401", 398: "n02666196", 411: "n02730930", 417: "n02782093", 431: "n02804414",
    438: "n02815834", 443: "n02834397", 456: "n02879718", 471: "n02950826", 488: "n02999410",
    501: "n03045698", 544: "n03259280", 549: "n03291819", 586: "n03478589", 587: "n03481172",
    594: "n03495258", 597: "n03527444", 624: "n03661043", 643: "n03724870", 664: "n03782006",
    698: "n03877845", 718: "n03933933", 727: "n03956157", 733: "n03976657", 745: "n04009552",
    753: "n04040759", 758: "n04067472", 766: "n04111531", 771: "n04125021", 780: "n04147183",
    783: "n04153751", 792: "n04208210", 813: "n04270147", 815: "n04275548", 816: "n04277352",
    830: "n04336792", 866: "n04465501", 902: "n04579432", 910: "n04597913", 982: "n10148035",
    987: "n12144580",
}  # fmt: skip

# first name in the class list -> display label, where the ImageNet name is terse, odd or ambiguous; a class
# that is the same thing as a COCO class takes the COCO label ("cellular telephone" -> "cell phone")
DISPLAY = {
    "hammerhead": "hammerhead shark", "cock": "rooster", "kite": "kite bird", "loggerhead": "loggerhead turtle",
    "whiptail": "whiptail lizard", "diamondback": "diamondback rattlesnake", "sidewinder": "sidewinder rattlesnake",
    "African grey": "African grey parrot", "tusker": "tusked elephant", "basset": "basset hound",
    "bluetick": "bluetick coonhound", "redbone": "redbone coonhound", "Airedale": "Airedale terrier",
    "cairn": "cairn terrier", "Dandie Dinmont": "Dandie Dinmont terrier", "Boston bull": "Boston terrier",
    "Scotch terrier": "Scottish terrier", "Lhasa": "Lhasa apso", "clumber": "clumber spaniel",
    "English springer": "English springer spaniel", "groenendael": "Groenendael", "malinois": "Malinois",
    "EntleBucher": "Entlebucher", "boxer": "boxer dog", "malamute": "Alaskan malamute", "Leonberg": "Leonberger",
    "Newfoundland": "Newfoundland dog", "chow": "chow chow", "Brabancon griffon": "Brussels griffon",
    "Pembroke": "Pembroke Welsh corgi", "Cardigan": "Cardigan Welsh corgi", "Mexican hairless": "Mexican hairless dog",
    "tabby": "tabby cat", "ice bear": "polar bear", "walking stick": "stick insect", "mantis": "praying mantis",
    "admiral": "admiral butterfly", "ringlet": "ringlet butterfly", "monarch": "monarch butterfly",
    "lycaenid": "lycaenid butterfly", "wood rabbit": "cottontail rabbit", "Angora": "Angora rabbit",
    "sorrel": "sorrel horse", "hog": "pig", "bighorn": "bighorn sheep", "Arabian camel": "camel",
    "patas": "patas monkey", "capuchin": "capuchin monkey", "titi": "titi monkey",
    "Madagascar cat": "ring-tailed lemur", "Indian elephant": "Asian elephant", "lesser panda": "red panda",
    "coho": "coho salmon", "rock beauty": "rock beauty fish", "anemone fish": "clownfish", "gar": "gar fish",
    "puffer": "pufferfish", "amphibian": "amphibious vehicle", "ashcan": "trash can",
    "ballpoint": "ballpoint pen", "Band Aid": "adhesive bandage", "bannister": "banister", "barrow": "wheelbarrow",
    "bathing cap": "swimming cap", "beach wagon": "station wagon", "beacon": "lighthouse",
    "bearskin": "bearskin hat", "bicycle-built-for-two": "tandem bicycle", "binder": "ring binder",
    "bookshop": "bookstore", "bottlecap": "bottle cap", "bow": "archery bow", "brass": "brass plaque",
    "brassiere": "bra", "cab": "taxi", "caldron": "cauldron", "cardigan": "cardigan sweater",
    "carpenter's kit": "tool kit", "carton": "cardboard box", "cash machine": "ATM",
    "cellular telephone": "cell phone", "chainlink fence": "chain-link fence", "chain saw": "chainsaw",
    "chiffonier": "chest of drawers", "chime": "chimes", "cinema": "movie theater", "cleaver": "meat cleaver",
    "coil": "coil spring", "computer keyboard": "keyboard", "confectionery": "candy store",
    "convertible": "convertible car", "crash helmet": "motorcycle helmet", "Crock Pot": "slow cooker",
    "dial telephone": "rotary phone", "dishrag": "dishcloth", "drilling platform": "oil rig",
    "file": "filing cabinet", "fire engine": "fire truck", "four-poster": "four-poster bed", "gasmask": "gas mask",
    "golfcart": "golf cart", "gown": "evening gown", "grille": "radiator grille", "hair slide": "hair clip",
    "hand blower": "hair drier", "hand-held computer": "handheld computer", "hard disc": "hard disk",
    "harvester": "combine harvester", "horse cart": "horse-drawn cart", "iron": "clothes iron", "jean": "jeans",
    "jersey": "T-shirt", "jinrikisha": "rickshaw", "lighter": "cigarette lighter", "liner": "ocean liner",
    "Loafer": "loafer shoe", "loupe": "jeweler's loupe", "lumbermill": "sawmill", "mask": "costume mask",
    "medicine chest": "medicine cabinet", "monitor": "computer monitor", "mortar": "mortar and pestle",
    "mountain tent": "tent", "muzzle": "dog muzzle", "nipple": "baby bottle nipple", "notebook": "notebook computer",
    "organ": "pipe organ", "paddlewheel": "paddle wheel", "pajama": "pajamas", "panpipe": "pan flute",
    "passenger car": "railway carriage", "pay-phone": "payphone", "pick": "guitar pick", "pickup": "pickup truck",
    "pirate": "pirate ship", "plane": "woodworking plane", "pop bottle": "soda bottle", "pot": "flowerpot",
    "puck": "hockey puck", "quill": "quill pen", "racer": "race car", "reel": "fishing reel",
    "reflex camera": "SLR camera", "remote control": "remote", "rubber eraser": "eraser", "rule": "ruler",
    "saltshaker": "salt shaker", "sax": "saxophone", "scale": "weighing scale", "screen": "CRT screen",
    "shoe shop": "shoe store", "shoji": "shoji screen", "ski": "skis", "slot": "slot machine", "streetcar": "tram",
    "studio couch": "sofa bed", "sunglass": "sunglass lens", "swab": "mop", "switch": "light switch",
    "tank": "army tank", "teddy": "teddy bear", "television": "tv", "thatch": "thatched roof", "toyshop": "toy store",
    "trailer truck": "semi truck", "tub": "vat", "upright": "upright piano", "vacuum": "vacuum cleaner",
    "vault": "vaulted ceiling", "velvet": "velvet fabric", "washer": "washing machine", "wing": "airplane wing",
    "worm fence": "split-rail fence", "wreck": "shipwreck", "web site": "website", "book jacket": "book cover",
    "plate": "plate of food", "ice lolly": "popsicle", "French loaf": "baguette", "hotdog": "hot dog",
    "mashed potato": "mashed potatoes", "head cabbage": "cabbage", "Granny Smith": "Granny Smith apple",
    "potpie": "pot pie", "alp": "mountain peak", "bubble": "soap bubble", "lakeside": "lakeshore",
    "promontory": "headland", "seashore": "beach", "ballplayer": "baseball player", "groom": "bridegroom",
    "yellow lady's slipper": "lady's slipper orchid", "hip": "rose hip", "buckeye": "horse chestnut",
    "agaric": "agaric mushroom", "gyromitra": "false morel", "earthstar": "earthstar fungus",
    "hen-of-the-woods": "maitake mushroom", "bolete": "bolete mushroom", "ear": "corn cob",
    "toilet tissue": "toilet paper",
}  # fmt: skip
# the two names the class list uses twice
DISPLAY_BY_INDEX = {134: "crane bird", 638: "tights", 639: "one-piece swimsuit"}

# display label -> more names people use for it (WordNet's lemmas are added on their own)
EXTRA_SYNONYMS = {
    "loudspeaker": ("speaker", "speakers", "loudspeakers", "speaker box", "sound box"),
    "trash can": ("bin", "garbage bin", "waste bin", "rubbish bin", "litter bin", "waste basket"),
    "computer monitor": ("computer screen", "display", "pc monitor"),
    "CRT screen": ("crt monitor",),
    "wall clock": ("kitchen clock",),
    "apiary": ("beehive", "beehives", "bee yard"),
    "pickup truck": ("pick up truck",),
    "bathtub": ("bath tub",),
    "one-piece swimsuit": ("swimsuit", "swimming costume", "bathing suit"),
    "table lamp": ("desk lamp", "lamp"),
    "sofa bed": ("futon",),
    "semi truck": ("lorry", "eighteen wheeler"),
    "ATM": ("cash point", "cashpoint"),
    "cardboard box": ("box",),
    "pig": ("swine",),
    "T-shirt": ("t shirt",),
    "vacuum cleaner": ("vacuum", "hoover"),
    "movie theater": ("cinema",),
    "flowerpot": ("plant pot",),
    "toilet paper": ("toilet roll",),
    "beach": ("seaside",),
    "desktop computer": ("computer", "pc"),
    "electric fan": ("fan",),
}  # fmt: skip

# a name that WordNet gives several classes goes to this one (None: to none)
SYNONYM_OWNER = {
    "sand viper": "horned viper", "grass snake": None, "catamount": None, "panther": None, "wagon": None,
    "tub": "bathtub", "cardigan": "cardigan sweater", "maillot": "one-piece swimsuit", "panda": "giant panda",
    "crawfish": "crayfish", "horn": "French horn",
}  # fmt: skip

# COCO label -> WordNet synsets (name.n.NN, the sense order of index.noun) whose descendants count as it
COCO_ANCHORS = {
    "person": ("person.n.01",), "bicycle": ("bicycle.n.01",), "car": ("car.n.01",),
    "motorcycle": ("motorcycle.n.01",), "airplane": ("airplane.n.01",), "bus": ("bus.n.01",),
    "train": ("train.n.01", "locomotive.n.01", "car.n.02"), "truck": ("truck.n.01",), "boat": ("vessel.n.02",),
    "traffic light": ("traffic_light.n.01",), "parking meter": ("parking_meter.n.01",), "bench": ("bench.n.01",),
    "bird": ("bird.n.01",), "cat": ("domestic_cat.n.01",), "dog": ("dog.n.01",), "horse": ("horse.n.01",),
    "sheep": ("sheep.n.01",), "cow": ("cattle.n.01",), "elephant": ("elephant.n.01",), "bear": ("bear.n.01",),
    "zebra": ("zebra.n.01",), "backpack": ("backpack.n.01",), "umbrella": ("umbrella.n.01",),
    "tie": ("necktie.n.01",), "sports ball": ("ball.n.01",), "bottle": ("bottle.n.01",), "cup": ("mug.n.04",),
    "knife": ("knife.n.01",), "spoon": ("spoon.n.01",), "bowl": ("bowl.n.03",), "banana": ("banana.n.02",),
    "apple": ("apple.n.01",), "sandwich": ("sandwich.n.01",), "orange": ("orange.n.01",),
    "broccoli": ("broccoli.n.02",), "hot dog": ("hotdog.n.02",), "pizza": ("pizza.n.01",), "chair": ("chair.n.01",),
    "couch": ("sofa.n.01",), "bed": ("bed.n.01",), "dining table": ("dining_table.n.01",), "laptop": ("laptop.n.01",),
    "mouse": ("mouse.n.04",), "remote": ("remote_control.n.01",), "keyboard": ("computer_keyboard.n.01",),
    "cell phone": ("cellular_telephone.n.01",), "microwave": ("microwave.n.02",), "oven": ("oven.n.01",),
    "toaster": ("toaster.n.02",), "refrigerator": ("refrigerator.n.01",), "clock": ("clock.n.01",),
    "vase": ("vase.n.01",), "teddy bear": ("teddy.n.01",), "hair drier": ("hand_blower.n.01",),
}  # fmt: skip

# display label -> COCO label (or None) where the hypernyms disagree with what COCO calls it
COCO_OVERRIDES = {
    "police van": "car", "bighorn sheep": "sheep", "dingo": "dog", "tusked elephant": "elephant",
    "warplane": "airplane", "motor scooter": "motorcycle", "tram": "train", "water buffalo": "cow", "bison": "cow",
    "purse": "handbag", "racket": "tennis racket", "skis": "skis", "goblet": "wine glass", "cup": "cup",
    "tv": "tv", "computer monitor": "tv", "CRT screen": "tv", "notebook computer": "laptop", "washbasin": "sink",
    "flowerpot": "potted plant", "comic book": "book", "punching bag": None, "Dutch oven": None,
}  # fmt: skip

# display label -> card, where the WordNet gloss misleads or says nothing useful (reviewed by eye)
CARDS = {
    "loudspeaker": "An electric device that turns an audio signal into sound; plays music, TV and computer sound "
                   "louder; a box or cone, often in pairs; found beside TVs, on desks, at concerts.",
    "trash can": "A bin that holds rubbish until it is collected; lidded plastic or metal can; found in "
                 "kitchens, offices, on streets and beside houses.",
    "Dutch oven": "A heavy lidded cast-iron or earthenware cooking pot for stews, braising and baking bread; "
                  "found on stoves, in ovens and at campfires.",
    "sunglass lens": "A convex lens that focuses the sun's rays, e.g. to start a fire; photos of it mostly show "
                     "a pair of sunglasses.",
    "cup": "A cup or glass holding a drink such as punch, tea or coffee; has a handle or none; found on tables "
           "and at parties.",
    "computer monitor": "The screen of a desktop computer that shows its picture; flat panel on a stand; found "
                        "on office and home desks beside the keyboard.",
    "CRT screen": "The glowing display of a cathode-ray-tube TV or computer monitor; a bulky box with a curved "
                  "glass face; found in older homes and offices.",
    "tv": "A television set: shows broadcast programmes, films and games on its screen; found in living rooms "
          "and bedrooms, often with speakers and a remote.",
    "website": "A page of the World Wide Web as shown on a computer or phone screen (text, pictures, links); "
               "photos of it are screenshots.",
    "plate of food": "A main course served on a plate, such as meat with vegetables; found on dining tables "
                     "and in restaurants.",
    "menu": "A printed card or board listing a restaurant's dishes and prices; found on restaurant tables and "
            "walls.",
    "stove": "A heater that burns wood, coal or gas to heat a room or cook; an iron box with a chimney pipe; "
             "found in houses, cabins and kitchens.",
    "street sign": "A sign beside or above a street showing its name, a direction or a rule; a metal plate on "
                   "a pole; found at street corners and along roads.",
    "corn": "Dried kernels of maize, used as animal feed or ground into meal; yellow grains, loose or on the "
            "cob; found on farms and in markets.",
    "tights": "Skin-tight one-piece garment worn by dancers and gymnasts (leotard and tights); found in "
              "dance studios, gyms and on stage.",
    "brass plaque": "A memorial tablet made of brass, engraved with names or an inscription; fixed on walls, "
                    "floors and monuments in churches and public buildings.",
    "hay": "Grass cut and dried to feed horses, cows and sheep; stored in bales or stacks; found in fields, "
           "barns and stables.",
    "velvet fabric": "A soft fabric with a thick short pile on one side, used for clothes, curtains and "
                     "upholstery; found on sofas, dresses and theatre seats.",
    "wool": "Fibre from the fleece of sheep, spun into yarn for knitting and weaving warm clothes and "
            "blankets; found in balls of yarn and knitwear.",
    "coil spring": "A spring made of wire wound in a spiral that returns to shape when pressed or stretched; "
                   "found in mattresses, car suspensions and machines.",
    "chain": "A series of connected metal links used for pulling, fastening, locking or lifting; found on "
             "bicycles, gates, anchors and fences.",
    "packet": "A small paper or plastic package holding sugar, seeds, crisps or medicine; found in shops, "
              "kitchens and cafes.",
    "cliff": "A steep high face of rock, as at the edge of the sea or of a mountain; found on coasts and in "
             "mountains.",
    "valley": "A long low area of land between hills or mountains, often with a river; seen in landscapes.",
    "cloak": "A loose sleeveless outer garment hanging from the shoulders, often with a hood; worn over other "
             "clothes for warmth or in costumes.",
    "clog": "A heavy shoe with a thick wooden sole; worn for work, in gardens and as folk costume.",
    "adhesive bandage": "A small sticky strip with a gauze pad (Band-Aid) that covers small cuts and blisters; "
                        "found in first-aid kits and on skin.",
    "CD player": "A machine that plays music from compact discs; a flat box with a disc tray, wired to speakers "
                 "or headphones; found in living rooms and cars.",
    "acoustic guitar": "A guitar whose sound comes from its hollow wooden body, not from an amplifier; played by "
                       "strumming or plucking six strings.",
    "hot pot": "A pot of simmering broth set on the table in which diners cook meat, vegetables and noodles "
               "(Chinese hotpot); also a British meat-and-potato stew.",
    "clownfish": "A small bright orange fish with white bands that lives among the stinging tentacles of sea "
                 "anemones; found on coral reefs and in aquariums.",
    "soap bubble": "A thin film of soapy water enclosing air, floating and shimmering with rainbow colours; "
                   "blown by children for fun; found in the air and on foam.",
}  # fmt: skip

# hypernyms too vague to help ("a kind of artifact"): the direct hypernym is named instead
_VAGUE_KINDS = {
    "artifact", "instrumentality", "device", "point", "piece", "object", "whole", "equipment", "structure",
    "covering", "implement", "mechanism", "restraint", "machine", "container", "organism", "plate",
}  # fmt: skip


@dataclass
class Synset:
    offset: str
    lemmas: list[str]
    hypernyms: list[str]
    gloss: str

    @property
    def wnid(self) -> str:
        return "n" + self.offset


class WordNet:
    """Just enough of WordNet 3.0's noun database (wndb(5) format) for this build."""

    def __init__(self, folder: Path):
        self.synsets: dict[str, Synset] = {}
        for line in (folder / "data.noun").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):  # licence header
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            count = int(f[3], 16)
            lemmas = [re.sub(r"\([a-z]+\)$", "", f[4 + 2 * i]).replace("_", " ") for i in range(count)]
            k = 4 + 2 * count
            pointers = [f[k + 1 + 4 * j : k + 5 + 4 * j] for j in range(int(f[k]))]
            self.synsets[f[0]] = Synset(
                f[0], lemmas,
                [p[1] for p in pointers if p[0] in ("@", "@i") and p[2] == "n"],
                gloss.strip(),
            )  # fmt: skip
        self.senses: dict[str, list[str]] = {}
        self.tagged: dict[str, int] = {}  # lemma -> how often its senses occur in the tagged corpus
        for line in (folder / "index.noun").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):
                continue
            f = line.split()
            count = int(f[2])
            self.senses[f[0]] = f[-count:]
            self.tagged[f[0]] = int(f[-count - 1])

    def is_main_sense(self, lemma: str, synset: Synset) -> bool:
        """False when the tagged corpus shows `lemma` naming another synset first: "pot" is first a cooking pot,
        not a flowerpot; "ear" an organ. (Senses of untagged lemmas come in no particular order.)"""
        key = lemma.lower().replace(" ", "_")
        senses = self.senses.get(key, [])
        return not senses or senses[0] == synset.offset or self.tagged.get(key, 0) == 0

    def named(self, name: str) -> Synset:
        """A synset by its "lemma.n.NN" name, NN counting senses in index.noun order."""
        lemma, _, number = name.rsplit(".", 2)
        return self.synsets[self.senses[lemma.lower()][int(number) - 1]]

    def ancestors(self, offset: str) -> dict[str, int]:
        """Every hypernym of a synset (all paths) with its distance; the synset itself at 0."""
        dist = {offset: 0}
        frontier = [offset]
        while frontier:
            nxt = []
            for o in frontier:
                for h in self.synsets[o].hypernyms:
                    if h not in dist:
                        dist[h] = dist[o] + 1
                        nxt.append(h)
            frontier = nxt
        return dist

    def familiar_kind(self, synset: Synset, max_up: int = 4) -> str | None:
        """The name of the nearest hypernym people use ("dog", not "toy dog"; "mammal", not "leporid")."""
        if not synset.hypernyms:
            return None
        first = current = self.synsets[synset.hypernyms[0]]
        for _ in range(max_up):
            name = current.lemmas[0]
            if self.tagged.get(name.lower().replace(" ", "_"), 0) > 0:
                return first.lemmas[0] if name in _VAGUE_KINDS else name
            if not current.hypernyms:
                break
            current = self.synsets[current.hypernyms[0]]
        return first.lemmas[0]


def match_synsets(wn: WordNet, lines: list[str]) -> list[Synset]:
    """Each class line's synset: equal lemma list, ids increasing with the line, `SENSES` for the rest."""
    by_lemmas: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for s in wn.synsets.values():
        by_lemmas[tuple(x.lower() for x in s.lemmas)].append(s.offset)
    candidates = []
    for i, line in enumerate(lines):
        found = sorted(by_lemmas.get(tuple(x.strip().lower() for x in line.split(",")), []))
        if not found:
            raise SystemExit(f"class {i} {line!r}: no WordNet 3.0 noun synset has these lemmas")
        candidates.append(found)
    low = ""  # keep the candidates that fit an increasing order: forwards, then backwards
    for c in candidates:
        c[:] = [o for o in c if o > low]
        low = c[0]
    high = "99999999"
    for c in reversed(candidates):
        c[:] = [o for o in c if o < high]
        high = c[-1]
    chosen = []
    for i, c in enumerate(candidates):
        if len(c) == 1:
            if i in SENSES:
                raise SystemExit(f"SENSES[{i}] is not needed: the order settles class {i}")
            chosen.append(c[0])
        elif SENSES.get(i, "n")[1:] in c:
            chosen.append(SENSES[i][1:])
        else:
            raise SystemExit(f"class {i} {lines[i]!r}: pick one of {['n' + o for o in c]} in SENSES")
    if chosen != sorted(chosen):
        raise SystemExit("the chosen synsets are not in id order")
    return [wn.synsets[o] for o in chosen]


def scientific(wn: WordNet, synset: Synset) -> set[str]:
    """Lemmas that are Latin binomials ("Tinca tinca", "Ursus Maritimus"): a capitalised genus that WordNet
    knows ("genus Tinca") and a second word."""
    return {
        lemma for lemma in synset.lemmas
        if len(lemma.split()) == 2 and lemma[0].isupper() and f"genus_{lemma.split()[0].lower()}" in wn.senses
    }  # fmt: skip


def display_labels(lines: list[str]) -> list[str]:
    labels = []
    for i, line in enumerate(lines):
        first = line.split(",")[0].strip()
        labels.append(DISPLAY_BY_INDEX.get(i) or DISPLAY.get(first, first))
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label.lower() in seen:
            raise SystemExit(f"display label {label!r} of class {i} is also class {seen[label.lower()]}'s")
        seen[label.lower()] = i
    unused = set(DISPLAY) - {line.split(",")[0].strip() for line in lines}
    if unused:
        raise SystemExit(f"DISPLAY names no class: {sorted(unused)}")
    return labels


def synonym_lists(wn: WordNet, synsets: list[Synset], labels: list[str]) -> list[list[str]]:
    """Each class's other names, lower-case: its WordNet lemmas that name it first ("pot" is first a cooking pot,
    "ear" an organ, so neither stays a synonym of flowerpot / corn cob) and `EXTRA_SYNONYMS`; a name that
    several classes would share goes to one (`SYNONYM_OWNER`) or none."""
    display_of = {label.lower(): i for i, label in enumerate(labels)}
    wanted: list[list[str]] = []
    owners: dict[str, set[int]] = defaultdict(set)
    for i, (synset, label) in enumerate(zip(synsets, labels)):
        latin = scientific(wn, synset)
        lemmas = [
            x for x in synset.lemmas
            if x not in latin and (x.lower() in SYNONYM_OWNER or wn.is_main_sense(x, synset))
        ]  # fmt: skip
        extra = list(EXTRA_SYNONYMS.get(label, ()))
        if {x.lower() for x in extra} & {x.lower() for x in lemmas}:
            raise SystemExit(f"EXTRA_SYNONYMS[{label!r}] repeats a WordNet name")
        names = lemmas + extra
        names = list(dict.fromkeys(n.lower() for n in names if n.lower() != label.lower()))
        wanted.append(names)
        for n in names:
            owners[n].add(i)
    index_of = {label: i for i, label in enumerate(labels)}
    settled = set()
    for name, idx in owners.items():
        if name in display_of:  # another class is called this: it keeps the name
            owners[name] = set()
        elif len(idx) > 1:
            if name not in SYNONYM_OWNER:
                raise SystemExit(f"{name!r} is a name of {[labels[i] for i in sorted(idx)]}: add it to SYNONYM_OWNER")
            owner = SYNONYM_OWNER[name]
            owners[name] = {index_of[owner]} if owner is not None else set()
            settled.add(name)
    if set(SYNONYM_OWNER) - settled:
        raise SystemExit(f"SYNONYM_OWNER entries that settle nothing: {sorted(set(SYNONYM_OWNER) - settled)}")
    return [[n for n in names if i in owners[n]] for i, names in enumerate(wanted)]


def coco_labels(wn: WordNet, synsets: list[Synset], labels: list[str]) -> list[str | None]:
    anchors = {wn.named(name).offset: (coco, name) for coco, names in COCO_ANCHORS.items() for name in names}
    result, used = [], set()
    for synset, label in zip(synsets, labels):
        hits = sorted((d, anchors[o]) for o, d in wn.ancestors(synset.offset).items() if o in anchors)
        found = hits[0][1] if hits else (None, None)
        if label in COCO_OVERRIDES:
            if COCO_OVERRIDES[label] == found[0]:
                raise SystemExit(f"COCO_OVERRIDES[{label!r}] is what the hypernyms give anyway")
            result.append(COCO_OVERRIDES[label])
        else:
            result.append(found[0])
            used.add(found[1])
    unused = (set(COCO_OVERRIDES) - set(labels)) | {n for names in COCO_ANCHORS.values() for n in names} - used
    if unused:
        raise SystemExit(f"COCO_OVERRIDES / COCO_ANCHORS entries that decide nothing: {sorted(unused)}")
    return result


def _sentence(gloss: str) -> str:
    """The definition part of a gloss, capitalised: no quoted examples, no leading "(Middle Ages)"."""
    text = re.split(r';?\s*"', gloss, maxsplit=1)[0].strip().rstrip(";.").strip()
    text = re.sub(r"^\([^)]*\)\s*", "", text)
    return text[0].upper() + text[1:]


def _shorten(text: str, room: int) -> str:
    """Fit `text` into `room` characters: drop parentheses, then trailing clauses, then trailing words."""
    if len(text) > room:
        text = re.sub(r"\s*\([^)]*\)", "", text)
    while len(text) > room and ";" in text:
        text = text.rsplit(";", 1)[0]
    while len(text) > room and ", " in text:
        text = text.rsplit(", ", 1)[0]
    while len(text) > room:
        text = text.rsplit(" ", 1)[0]
    return text.rstrip(" ,;:")


def card(wn: WordNet, synset: Synset, label: str, coco: str | None) -> str:
    """WordNet's definition, then "a kind of <hypernym>" and the COCO class (unless the definition says them)."""
    if label in CARDS:
        return CARDS[label]
    definition = _sentence(synset.gloss)
    tail = []
    kind = wn.familiar_kind(synset)
    if coco and kind in COCO_LABELS:  # a minivan is "a kind of car" (for COCO), not of truck
        kind = coco
    if kind and kind != label and kind.lower() not in definition.lower():
        tail.append(f"a kind of {kind}")
    if coco and coco != label and coco not in definition.lower() and not any(coco in t for t in tail):
        tail.append(f"counts as a {coco}")
    suffix = "".join(f"; {t}" for t in tail) + "."
    return _shorten(definition, MAX_CARD - len(suffix)) + suffix


def build(wordnet: Path, labels_file: Path) -> tuple[list[dict], dict[str, str]]:
    wn = WordNet(wordnet)
    lines = labels_file.read_text(encoding="utf-8").splitlines()
    if len(lines) != 1000:
        raise SystemExit(f"{labels_file}: expected 1000 classes, found {len(lines)}")
    synsets = match_synsets(wn, lines)
    labels = display_labels(lines)
    unknown = (set(EXTRA_SYNONYMS) | set(CARDS)) - set(labels)
    if unknown:
        raise SystemExit(f"EXTRA_SYNONYMS / CARDS name no display label: {sorted(unknown)}")
    synonyms = synonym_lists(wn, synsets, labels)
    coco = coco_labels(wn, synsets, labels)
    vocabulary = [
        {"index": i, "wnid": s.wnid, "names": [x.strip() for x in line.split(",")], "label": label,
         "synonyms": syn, "coco": c}
        for i, (line, s, label, syn, c) in enumerate(zip(lines, synsets, labels, synonyms, coco))
    ]  # fmt: skip
    cards = {label: card(wn, s, label, c) for s, label, c in zip(synsets, labels, coco)}
    too_long = [label for label, text in cards.items() if len(text) > MAX_CARD]
    if too_long:
        raise SystemExit(f"cards longer than {MAX_CARD} characters: {too_long}")
    return vocabulary, cards


def _dump(value) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"),
                        help="folder with WordNet 3.0's data.noun and index.noun")  # fmt: skip
    parser.add_argument("--labels", type=Path, help="the class list (default: the efficientnet-lite3 asset's)")
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args(argv)
    labels_file = args.labels
    if labels_file is None:
        from cielr_agent.assets import ensure_asset

        labels_file = ensure_asset("efficientnet-lite3").parent / "efficientnet_labels.txt"
    vocabulary, cards = build(args.wordnet, labels_file)
    outputs = {VOCABULARY_JSON: _dump(vocabulary), CARDS_JSON: _dump(cards)}
    if args.check:
        stale = [p for p, text in outputs.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        for p in stale:
            print(f"{p.relative_to(ROOT)} is out of date", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
