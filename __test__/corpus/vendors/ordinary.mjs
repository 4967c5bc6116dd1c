// The ordinary pages of the vendor corpus: articles, short 404 pages and
// forms with captcha widgets, into which each vendor's injected snippet
// goes (see index.mjs). Written for these tests.

const ABOUT = [
  "About this guide: it is part of a series written by readers and edited by a small group of volunteers, who check every step against their own experience before it is published. If something does not work the way it is described here, tell us and we will look into it and update the page.",
  "Corrections and additions from readers are credited at the bottom of each guide. We never accept payment for mentioning a product, and the links on this page go to shops and makers we have used ourselves. Older versions of every guide are kept in the archive, so that nothing you once relied on disappears.",
];

export const ARTICLES = {
  planting: {
    title: "Spring planting guide",
    paragraphs: [
      "Cool-season vegetables such as peas, spinach and radishes can go into the ground as soon as the soil can be worked. Wait until the soil crumbles in your hand instead of forming a sticky ball; working wet soil ruins its structure for the whole season.",
      "Warm-season crops are a different story. Tomatoes, peppers and squash sulk in cold soil and are easily damaged by a late frost, so most growers start them indoors six to eight weeks before the last expected frost date and move them out once nights stay above ten degrees.",
      "Hardening off is the step most beginners skip. Put seedlings outside in a sheltered spot for an hour on the first day, then a little longer each day for a week. Plants that skip this step often scorch in the sun or snap in the wind on their first afternoon outdoors.",
      "Mulch after planting, not before. A layer of straw or shredded leaves keeps moisture in and weeds down, but laid too early it keeps the soil cold and slows everything down. Water deeply once a week rather than a little every day, so the roots grow down instead of staying near the surface.",
      "Finally, keep notes. Write down what you planted, where and when, and how it did. After two or three seasons those notes are worth more than any guide, because they describe your own soil, your own weather and your own habits.",
    ],
  },
  hiking: {
    title: "A weekend in the mountains",
    paragraphs: [
      "The trail starts behind the old railway station and climbs steadily through pine forest for the first hour. There is water at the second bridge, but nowhere after that until the hut, so fill every bottle you carry before you leave the valley.",
      "Above the tree line the path becomes rocky and the markings are painted on stones rather than posts. In fog they are hard to see; the ridge is broad and it is easy to drift east towards the steeper ground, so take a compass bearing at the cairn before the clouds come in.",
      "The hut is open from June to September and serves a simple dinner of soup, bread and whatever the warden managed to carry up that week. Bunks are shared and the generator goes off at ten, so bring a head torch and ear plugs if you are a light sleeper.",
      "On the second day most people go over the pass and down the other side to the lake, where a bus runs back to town twice a day. The descent is long and hard on the knees; walking poles help more than you would expect, even for people who never use them on flat ground.",
      "Check the forecast the evening before and again at breakfast. Afternoon thunderstorms are common in July, and the ridge is no place to be when they arrive. Starting early is the simplest way to be down before the weather turns.",
    ],
  },
  sourdough: {
    title: "How to keep sourdough starter alive",
    paragraphs: [
      "A sourdough starter is nothing more than flour and water in which wild yeasts and bacteria have settled. Feed it regularly and it will outlive most kitchen appliances; neglect it for a month and it will usually still come back after a few feedings.",
      "Most bakers keep their starter in the fridge and feed it once a week: discard all but a spoonful, add equal weights of flour and water, stir, leave it on the counter for an hour or two and put it back. The cold slows everything down, so a weekly meal is plenty.",
      "Before baking, take the starter out the day before and give it two feedings at room temperature, about twelve hours apart. It is ready when it has doubled, smells pleasantly sour and a spoonful floats in a glass of water.",
      "A grey liquid on top is alcohol produced by hungry yeast. Pour it off or stir it in, then feed as usual. Pink or orange streaks are another matter: they mean unwanted bacteria have taken over, and the only safe thing to do is throw the starter away and begin again.",
      "Whole grain flours make a more active starter than white flour, and rye is the most vigorous of all. Many bakers keep a rye starter even when they bake mostly white bread, because it recovers quickly from neglect and travels well.",
    ],
  },
  bicycle: {
    title: "Choosing a used bicycle",
    paragraphs: [
      "Start with the frame. Look closely at the joints near the bottom bracket and the head tube for cracks, ripples in the paint or signs of welding repairs. A dented aluminium tube is a reason to walk away; steel frames are more forgiving of small dents.",
      "Spin the wheels and watch the rims against the brake pads. A slight wobble can be fixed by truing the wheel, but a rim with a flat spot or deep grooves from worn pads will need replacing, and new wheels can cost half as much as the whole bicycle.",
      "Shift through every gear while turning the pedals by hand. Skipping under load usually means a worn chain and cassette, which are cheap to replace together but expensive if you wait and the chainrings wear out too.",
      "Check the fit before you fall in love with the colour. Stand over the top tube with both feet flat; you want a few centimetres of clearance. Then sit on the saddle and reach for the bars: your arms should be slightly bent and your back at a comfortable angle.",
      "Ask for the service history and for the frame number, and compare it with the stolen bicycle registers in your area. An honest seller will not mind, and you will sleep better knowing the bicycle you ride to work is really yours.",
    ],
  },
  coffee: {
    title: "Notes on brewing coffee at home",
    paragraphs: [
      "Fresh beans matter more than any gadget. Buy whole beans roasted within the last few weeks, keep them in an airtight container away from light and heat, and grind them just before brewing. Pre-ground coffee loses most of its aroma within days.",
      "The ratio is the next thing to get right. A good starting point is sixty grams of coffee per litre of water; weigh both rather than using scoops, because beans vary a lot in size and density from one roast to the next.",
      "Water temperature should be just off the boil, around ninety-three degrees. Water that is too hot extracts bitter compounds; water that is too cool leaves the cup thin and sour. Letting the kettle rest for thirty seconds after it clicks off is close enough.",
      "For a pour-over, wet all the grounds with a little water first and wait half a minute while the coffee blooms and releases gas. Then pour slowly in circles, keeping the bed of grounds level, until the full amount of water has passed through.",
      "Taste and adjust one thing at a time. Bitter and harsh usually means the grind is too fine; sour and weak means it is too coarse. Keep notes for a week and you will find the settings that suit your beans and your taste.",
    ],
  },
  houseplants: {
    title: "Caring for houseplants in winter",
    paragraphs: [
      "Most houseplants grow slowly or not at all in winter, when days are short and the light is weak. They need much less water than in summer; check the soil with a finger and water only when the top few centimetres are dry.",
      "Move plants closer to the windows, but not so close that the leaves touch cold glass. A south-facing sill that is too hot in July can be the best spot in the house in January, and a sheer curtain is enough to protect sensitive leaves.",
      "Central heating dries the air, which tropical plants dislike. Grouping plants together raises the humidity around them, and a tray of pebbles kept wet beneath the pots helps too. Misting feels useful but the effect lasts only minutes.",
      "Hold back on fertiliser until spring. Feeding a plant that is not growing only builds up salts in the soil, which can burn the roots. If you see a white crust on the surface of the pot, flush it through with plenty of water in the sink.",
      "Watch for pests, which love warm dry rooms. Spider mites leave fine webbing under the leaves, and scale insects look like small brown bumps on the stems. Wiping the leaves with a damp cloth every few weeks keeps both in check and lets the plant use the little light there is.",
    ],
  },
  library: {
    title: "The history of the town library",
    paragraphs: [
      "The first public library in the town opened in 1887 in two rooms above the post office, with some four hundred books donated by local families. It was open three evenings a week, and a small fee was charged to borrow anything other than the Bible.",
      "By the turn of the century the collection had outgrown its rooms. A local mill owner paid for a new building on the market square, on the condition that it be free to everyone and open on Saturdays, when the mill workers were paid and had time to read.",
      "The building survived two floods and a fire in the reading room in 1934, after which the wooden shelves were replaced with steel. Those shelves are still in use today, repainted many times, and visitors can see the scorch marks on the old beam above the door.",
      "In the 1970s the library began lending records and, later, videotapes. The children's section moved to the ground floor so that prams could reach it, and a ramp was built at the side entrance long before the law required one.",
      "Today the library lends books, films and even tools, runs language classes and a repair café, and offers computers to anyone who needs one. The four hundred books of 1887 have become more than sixty thousand, but the Saturday opening hours have never changed.",
    ],
  },
  tap: {
    title: "Repairing a dripping tap",
    paragraphs: [
      "A dripping tap wastes thousands of litres of water a year and is usually one of the easiest repairs in the house. Before you start, turn off the water supply under the sink or at the main valve, and open the tap to let the remaining water drain out.",
      "Put the plug in the sink so that small parts cannot fall down the drain. Remove the decorative cap on the handle, unscrew the handle and lift it off, then use a spanner to loosen the large nut that holds the valve in the body of the tap.",
      "In older taps the culprit is a rubber washer at the bottom of the valve, worn hard and flat by years of use. Take the old one to a hardware shop to be sure of getting the same size. Newer taps use ceramic cartridges, which are replaced as a single unit.",
      "Reassemble everything in reverse order, taking care not to overtighten the nut, which can crack the ceramic parts. Turn the water back on slowly and check for leaks around the base of the handle as well as at the spout.",
      "If the tap still drips after a new washer, the valve seat itself may be pitted. A seat cutter, available cheaply, can grind it smooth again; otherwise the whole tap may be due for replacement, which is a bigger job but still within reach of a patient beginner.",
    ],
  },
};

const paragraphs = (key) => [...ARTICLES[key].paragraphs, ...ABOUT].map((p) => `    <p>${p}</p>`).join('\n');

/** An article of `site` (well over 1,500 characters of text), with `head` and `foot` snippets. */
export function contentPage(key, site, { head = '', foot = '' } = {}) {
  const { title } = ARTICLES[key];
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>${title} | ${site}</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">${head}
</head>
<body>
  <header><a href="/">${site}</a> <nav><a href="/">Home</a> <a href="/about">About</a> <a href="/contact">Contact</a></nav></header>
  <main>
    <h1>${title}</h1>
${paragraphs(key)}
  </main>
  <footer>© 2026 ${site}. All rights reserved.</footer>${foot}
</body>
</html>
`;
}

/** A short 404 page of `site`, with `head` and `foot` snippets. */
export function notFoundPage(site, { head = '', foot = '' } = {}) {
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Page not found | ${site}</title>${head}
</head>
<body>
  <h1>404</h1>
  <p>Sorry, we could not find that page. <a href="/">Back to the home page</a>.</p>${foot}
</body>
</html>
`;
}
