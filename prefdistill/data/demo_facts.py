"""Fact tables for the shipped demo dataset (:mod:`prefdistill.data.demo`).

Plain, well-known facts only, so the "chosen" answers are unambiguously correct.
"""

CAPITALS = dict(
    pair.split(":")
    for pair in (
        "France:Paris,Italy:Rome,Spain:Madrid,Germany:Berlin,Portugal:Lisbon,Greece:Athens,"
        "Poland:Warsaw,Austria:Vienna,Hungary:Budapest,Sweden:Stockholm,Norway:Oslo,Finland:Helsinki,"
        "Denmark:Copenhagen,Ireland:Dublin,Belgium:Brussels,Netherlands:Amsterdam,Switzerland:Bern,"
        "Czechia:Prague,Romania:Bucharest,Bulgaria:Sofia,Serbia:Belgrade,Croatia:Zagreb,Ukraine:Kyiv,"
        "Russia:Moscow,Turkey:Ankara,Egypt:Cairo,Kenya:Nairobi,Nigeria:Abuja,Ghana:Accra,Morocco:Rabat,"
        "Ethiopia:Addis Ababa,Japan:Tokyo,China:Beijing,India:New Delhi,Thailand:Bangkok,"
        "Vietnam:Hanoi,Indonesia:Jakarta,Philippines:Manila,South Korea:Seoul,Iran:Tehran,Iraq:Baghdad,"
        "Pakistan:Islamabad,Australia:Canberra,New Zealand:Wellington,Canada:Ottawa,Mexico:Mexico City,"
        "Cuba:Havana,Peru:Lima,Chile:Santiago,Argentina:Buenos Aires,Colombia:Bogota,Venezuela:Caracas,"
        "Brazil:Brasilia,Iceland:Reykjavik,Scotland:Edinburgh,Wales:Cardiff,Nepal:Kathmandu,"
        "Mongolia:Ulaanbaatar,Afghanistan:Kabul,Qatar:Doha"
    ).split(",")
)

OPPOSITES = dict(
    pair.split(":")
    for pair in (
        "hot:cold,big:small,tall:short,fast:slow,happy:sad,light:dark,up:down,open:closed,full:empty,"
        "early:late,hard:soft,heavy:light,wet:dry,young:old,rich:poor,strong:weak,loud:quiet,thick:thin,"
        "clean:dirty,day:night,first:last,inside:outside,left:right,high:low,near:far,push:pull,"
        "buy:sell,win:lose,give:take,laugh:cry,start:finish,always:never,before:after,true:false,"
        "safe:dangerous,easy:difficult,cheap:expensive,friend:enemy,north:south,east:west,sweet:sour,"
        "wide:narrow,deep:shallow,brave:cowardly,polite:rude,asleep:awake,arrive:leave,accept:refuse,"
        "remember:forget,question:answer,above:below,front:back,noisy:silent,smooth:rough,"
        "sharp:blunt,tight:loose,ancient:modern,top:bottom,love:hate,increase:decrease,"
        "begin:end,dead:alive,entrance:exit,maximum:minimum,giant:dwarf,winter:summer"
    ).split(",")
)

# (question, correct answer, plausible wrong answer)
FACTS = [
    (
        "What color is the sky on a clear day?",
        "The sky is blue on a clear day.",
        "The sky is green on a clear day.",
    ),
    ("How many days are in a week?", "There are 7 days in a week.", "There are 5 days in a week."),
    ("How many legs does a spider have?", "A spider has 8 legs.", "A spider has 6 legs."),
    ("How many legs does an insect have?", "An insect has 6 legs.", "An insect has 4 legs."),
    ("What do bees make?", "Bees make honey.", "Bees make milk."),
    (
        "At what temperature does water freeze in Celsius?",
        "Water freezes at 0 degrees Celsius.",
        "Water freezes at 50 degrees Celsius.",
    ),
    (
        "At what temperature does water boil in Celsius?",
        "Water boils at 100 degrees Celsius.",
        "Water boils at 10 degrees Celsius.",
    ),
    ("Which planet do we live on?", "We live on Earth.", "We live on Mars."),
    (
        "What is the largest ocean on Earth?",
        "The Pacific Ocean is the largest.",
        "The Arctic Ocean is the largest.",
    ),
    ("How many months are in a year?", "There are 12 months in a year.", "There are 10 months in a year."),
    ("How many hours are in a day?", "There are 24 hours in a day.", "There are 12 hours in a day."),
    (
        "How many minutes are in an hour?",
        "There are 60 minutes in an hour.",
        "There are 100 minutes in an hour.",
    ),
    ("What gas do plants take in from the air?", "Plants take in carbon dioxide.", "Plants take in helium."),
    (
        "What is the closest star to Earth?",
        "The Sun is the closest star to Earth.",
        "The Moon is the closest star to Earth.",
    ),
    ("What do cows drink?", "Cows drink water.", "Cows drink milk."),
    (
        "Which animal is known as the king of the jungle?",
        "The lion is called the king of the jungle.",
        "The rabbit is called the king of the jungle.",
    ),
    ("What color are ripe bananas?", "Ripe bananas are yellow.", "Ripe bananas are purple."),
    ("How many sides does a triangle have?", "A triangle has 3 sides.", "A triangle has 4 sides."),
    ("How many sides does a square have?", "A square has 4 sides.", "A square has 5 sides."),
    ("How many sides does a hexagon have?", "A hexagon has 6 sides.", "A hexagon has 8 sides."),
    ("What do you call frozen water?", "Frozen water is called ice.", "Frozen water is called steam."),
    ("Which season comes after winter?", "Spring comes after winter.", "Autumn comes after winter."),
    ("Which season comes after summer?", "Autumn comes after summer.", "Spring comes after summer."),
    (
        "What is the opposite direction of north?",
        "The opposite of north is south.",
        "The opposite of north is east.",
    ),
    ("Where do fish live?", "Fish live in water.", "Fish live in trees."),
    ("What do we use to see?", "We use our eyes to see.", "We use our ears to see."),
    ("What do we use to hear?", "We use our ears to hear.", "We use our nose to hear."),
    ("How many wheels does a bicycle have?", "A bicycle has 2 wheels.", "A bicycle has 3 wheels."),
    ("How many continents are there?", "There are 7 continents.", "There are 4 continents."),
    (
        "What is the main language of Brazil?",
        "The main language of Brazil is Portuguese.",
        "The main language of Brazil is German.",
    ),
    (
        "Which is heavier, a kilogram of iron or a gram of iron?",
        "A kilogram of iron is heavier.",
        "A gram of iron is heavier.",
    ),
    (
        "What do caterpillars turn into?",
        "Caterpillars turn into butterflies.",
        "Caterpillars turn into frogs.",
    ),
    ("What is the color of grass?", "Grass is green.", "Grass is orange."),
    ("What do chickens lay?", "Chickens lay eggs.", "Chickens lay stones."),
    ("Which month has the fewest days?", "February has the fewest days.", "August has the fewest days."),
    (
        "What is the largest planet in the solar system?",
        "Jupiter is the largest planet.",
        "Mercury is the largest planet.",
    ),
    ("What shape is a ball?", "A ball is round, like a sphere.", "A ball is shaped like a cube."),
    ("What do pandas mostly eat?", "Pandas mostly eat bamboo.", "Pandas mostly eat fish."),
    (
        "How many players are on a soccer team on the field?",
        "A soccer team has 11 players on the field.",
        "A soccer team has 5 players on the field.",
    ),
    (
        "What instrument has black and white keys?",
        "The piano has black and white keys.",
        "The drum has black and white keys.",
    ),
]

SUMMARY_NAMES = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jon",
    "Kemi",
    "Liam",
]
# (place, activity) combinations for the "summarise this sentence" task
SUMMARY_SCENES = [
    ("park", "feed the ducks"),
    ("library", "return two books"),
    ("market", "buy fresh apples"),
    ("beach", "collect shells"),
    ("gym", "lift weights"),
    ("bakery", "order a birthday cake"),
    ("station", "catch the early train"),
    ("garden", "plant tomatoes"),
    ("museum", "see the dinosaur bones"),
    ("cinema", "watch a new film"),
    ("lake", "go fishing"),
    ("school", "meet the new teacher"),
]
SUMMARY_DAYS = ["on Monday", "on Saturday", "last night", "this morning", "after lunch", "on Sunday"]
SUMMARY_FILLERS = [
    "because the weather was nice",
    "even though it was raining",
    "with an old friend",
    "after finishing work early",
    "while talking on the phone",
    "before the shops closed",
]

RUDE = [
    "I don't feel like answering that.",
    "Figure it out yourself.",
    "Why are you asking me? Look it up.",
    "That is a boring question.",
    "Ugh, not this again. No.",
    "Who cares? Ask someone else.",
    "I'm not going to help with that.",
    "Stop bothering me with questions.",
]
OFF_TOPIC = [
    "My favourite food is pizza.",
    "Bananas are a good source of potassium.",
    "The weather has been strange lately.",
    "I once saw a very large dog.",
    "Trains are faster than bicycles.",
    "Purple is a nice color for a door.",
]
